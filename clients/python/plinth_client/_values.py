"""Plain Python values to Plinth arguments and back: JSON values, bytes, tensors (numpy
arrays when numpy is installed, else Tensor), data-access references."""
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from google.protobuf import json_format, struct_pb2

from plinth.v1 import arg_pb2

try:  # numpy is optional: tensors come back as numpy arrays when it is installed
    import numpy as _np
except ImportError:  # pragma: no cover - depends on the machine
    _np = None

# Element types: the proto's DType, numpy's dtype name, the struct format's item size.
_DTYPES = {
    arg_pb2.D_TYPE_FLOAT32: ("float32", 4),
    arg_pb2.D_TYPE_FLOAT64: ("float64", 8),
    arg_pb2.D_TYPE_INT8: ("int8", 1),
    arg_pb2.D_TYPE_INT16: ("int16", 2),
    arg_pb2.D_TYPE_INT32: ("int32", 4),
    arg_pb2.D_TYPE_INT64: ("int64", 8),
    arg_pb2.D_TYPE_UINT8: ("uint8", 1),
    arg_pb2.D_TYPE_UINT16: ("uint16", 2),
    arg_pb2.D_TYPE_UINT32: ("uint32", 4),
    arg_pb2.D_TYPE_UINT64: ("uint64", 8),
    arg_pb2.D_TYPE_BOOL: ("bool", 1),
}
_BY_NAME = {name: dtype for dtype, (name, _) in _DTYPES.items()}

# JSON above this size goes as json_text: one string, not a message per element.
_TEXT_ABOVE = 1024


@dataclass(frozen=True)
class Tensor:
    """A dense tensor without numpy: element type, shape and little-endian bytes."""

    dtype: str
    shape: List[int]
    data: bytes


@dataclass(frozen=True)
class DataAccess:
    """An argument the engine resolves by calling a data-access function first."""

    name: str
    args: Sequence[Any] = ()
    kwargs: Dict[str, Any] = field(default_factory=dict)


def data_access(name: str, args: Sequence[Any] = (), kwargs: Optional[Dict[str, Any]] = None) -> DataAccess:
    return DataAccess(name, tuple(args), dict(kwargs or {}))


@dataclass(frozen=True)
class Summary:
    """A value the server showed in part (over engine.inline_payload_bytes)."""

    kind: str
    size_bytes: int
    prefix: str


def _special(value: Any) -> bool:
    """Whether a value cannot travel as JSON: then a list or dict holding it goes as a list or map argument."""
    if isinstance(value, (arg_pb2.Arg, bytes, bytearray, memoryview, DataAccess, Tensor)):
        return True
    if _np is not None and isinstance(value, _np.ndarray):
        return True
    if isinstance(value, (list, tuple)):
        return any(_special(v) for v in value if not isinstance(v, (int, float, str, bool, type(None))))
    if isinstance(value, dict):
        return any(_special(v) for v in value.values() if not isinstance(v, (int, float, str, bool, type(None))))
    return False


def to_arg(value: Any) -> arg_pb2.Arg:
    if isinstance(value, arg_pb2.Arg):
        return value
    if isinstance(value, (list, tuple)) and _special(value):
        return arg_pb2.Arg(list=arg_pb2.ArgList(items=[to_arg(v) for v in value]))
    if isinstance(value, dict) and _special(value):
        return arg_pb2.Arg(map=arg_pb2.ArgMap(entries={k: to_arg(v) for k, v in value.items()}))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return arg_pb2.Arg(bytes=bytes(value))
    if isinstance(value, DataAccess):
        return arg_pb2.Arg(
            data_access=arg_pb2.DataAccess(
                name=value.name,
                args=[to_arg(a) for a in value.args],
                kwargs={k: to_arg(v) for k, v in value.kwargs.items()},
            )
        )
    if isinstance(value, Tensor):
        return arg_pb2.Arg(tensor=arg_pb2.Tensor(dtype=_BY_NAME[value.dtype], shape=list(value.shape), data=value.data))
    if _np is not None and isinstance(value, _np.ndarray):
        name = value.dtype.name
        if name not in _BY_NAME:
            raise TypeError(f"tensor of dtype {name}: Plinth takes {', '.join(_BY_NAME)}")
        data = _np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
        return arg_pb2.Arg(tensor=arg_pb2.Tensor(dtype=_BY_NAME[name], shape=list(value.shape), data=data))
    text = json.dumps(value)
    if len(text) > _TEXT_ABOVE:
        return arg_pb2.Arg(json_text=text)
    arg = arg_pb2.Arg()
    json_format.Parse(text, arg.json)
    return arg


def from_arg(arg: Optional[arg_pb2.Arg]) -> Any:
    if arg is None:
        return None
    kind = arg.WhichOneof("kind")
    if kind == "json":
        return _value(arg.json)
    if kind == "json_text":
        return json.loads(arg.json_text)
    if kind == "bytes":
        return arg.bytes
    if kind == "tensor":
        name, _ = _DTYPES[arg.tensor.dtype]
        shape = list(arg.tensor.shape)
        if _np is None:
            return Tensor(name, shape, arg.tensor.data)
        return _np.frombuffer(arg.tensor.data, dtype=_np.dtype(name).newbyteorder("<")).reshape(shape)
    if kind == "summary":
        s = arg.summary
        return Summary(arg_pb2.ArgKind.Name(s.kind).replace("ARG_KIND_", "").lower(), s.size_bytes, s.prefix)
    if kind == "list":
        return [from_arg(item) for item in arg.list.items]
    if kind == "map":
        return {key: from_arg(item) for key, item in arg.map.entries.items()}
    return None


def _value(value: struct_pb2.Value) -> Any:
    return json.loads(json_format.MessageToJson(value))
