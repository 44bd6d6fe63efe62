"""The client: the three services' stubs, and create / fit / predict runs that follow
an action to its end with plain values in and out."""
import json
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence

import grpc
from google.protobuf import duration_pb2, json_format

from plinth.v1 import action_pb2, action_service_pb2, action_service_pb2_grpc, engine_service_pb2, engine_service_pb2_grpc, state_service_pb2_grpc

from ._values import from_arg, to_arg

_ENDED = {action_pb2.ACTION_STATUS_SUCCEEDED, action_pb2.ACTION_STATUS_FAILED, action_pb2.ACTION_STATUS_CANCELLED}


def _status(value: int) -> str:
    return action_pb2.ActionStatus.Name(value).replace("ACTION_STATUS_", "").lower()


def _json(value) -> Any:
    return json.loads(json_format.MessageToJson(value)) if value is not None else None


@dataclass
class Progress:
    """One update of a running action."""

    status: str
    state: Any
    queue_position: int
    data_access: List[Dict[str, Any]]
    action: action_pb2.Action


class ActionError(Exception):
    """An action that failed or was cancelled: its error code, message and the plugin's stack."""

    def __init__(self, action: action_pb2.Action):
        self.action = action
        self.status = _status(action.status)
        self.code = action.error.code
        self.plugin_stack = action.error.stack
        super().__init__(f"action {action.id} {self.status}: {action.error.code}: {action.error.message}")


@dataclass
class ModelResult:
    model_id: str
    revision: int
    state: Any
    action: action_pb2.Action


@dataclass
class PredictResult:
    prediction: Any
    action: action_pb2.Action


def _progress(action: action_pb2.Action) -> Progress:
    return Progress(
        status=_status(action.status),
        state=_json(action.state) if action.HasField("state") else None,
        queue_position=action.queue_position,
        data_access=[
            {"argument": d.argument, "name": d.name, "status": _status(d.status), "state": _json(d.state) if d.HasField("state") else None}
            for d in action.data_access
        ],
        action=action,
    )


class Run:
    """An action started by create, fit or predict."""

    def __init__(self, client: "Client", action: action_pb2.Action, result):
        self._client = client
        self.action = action
        self._result = result

    @property
    def id(self) -> str:
        return self.action.id

    def progress(self) -> Iterator[Progress]:
        """Every update until the action ends (the last one included)."""
        for update in self._client.actions.WatchAction(action_service_pb2.WatchActionRequest(action_id=self.id), metadata=self._client._metadata):
            yield _progress(update.action)

    def result(self, timeout: Optional[float] = None):
        """Waits for the end: the result when it succeeded, else raises ActionError."""
        ended = self.action
        if ended.status not in _ENDED:
            request = action_service_pb2.WaitActionRequest(action_id=self.id, view=action_pb2.ACTION_VIEW_RESULT)
            ended = self._client.actions.WaitAction(request, timeout=timeout, metadata=self._client._metadata).action
        if ended.status != action_pb2.ACTION_STATUS_SUCCEEDED:
            raise ActionError(ended)
        return self._result(ended)

    def cancel(self) -> action_pb2.Action:
        """Cancels it; returns the action as it ended."""
        return self._client.actions.CancelAction(action_service_pb2.CancelActionRequest(action_id=self.id), metadata=self._client._metadata).action


def _model_result(action: action_pb2.Action) -> ModelResult:
    return ModelResult(action.model_id, action.result.model.revision, _json(action.state) if action.HasField("state") else None, action)


def _predict_result(action: action_pb2.Action) -> PredictResult:
    return PredictResult(from_arg(action.result.prediction) if action.result.HasField("prediction") else None, action)


class Client:
    """A client for the Plinth server at `address` (host:port).

    token: sent as `authorization: Bearer <token>`; root_certificates (PEM bytes): TLS,
    with private_key and certificate_chain for mutual TLS.
    """

    def __init__(
        self,
        address: str,
        token: Optional[str] = None,
        root_certificates: Optional[bytes] = None,
        private_key: Optional[bytes] = None,
        certificate_chain: Optional[bytes] = None,
    ):
        options = [("grpc.max_receive_message_length", -1)]
        if root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
            self.channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.engine = engine_service_pb2_grpc.EngineServiceStub(self.channel)
        self.actions = action_service_pb2_grpc.ActionServiceStub(self.channel)
        self.state = state_service_pb2_grpc.StateServiceStub(self.channel)

    def _request(
        self,
        args: Sequence[Any],
        kwargs: Optional[Dict[str, Any]],
        timeout_seconds: Optional[float],
        request_id: Optional[str],
        priority: Optional[int],
        retry: Optional[Dict[str, Any]] = None,
        wait: bool = False,
    ) -> Dict[str, Any]:
        request: Dict[str, Any] = {"args": [to_arg(a) for a in args], "kwargs": {k: to_arg(v) for k, v in (kwargs or {}).items()}, "wait": wait}
        if timeout_seconds is not None:
            timeout = duration_pb2.Duration()
            timeout.FromMilliseconds(int(timeout_seconds * 1000))
            request["timeout"] = timeout
        if request_id is not None:
            request["request_id"] = request_id
        if priority is not None:
            request["priority"] = priority
        if retry is not None:
            request["retry"] = _retry_policy(retry)
        return request

    # request_id: the same id again (after a network error, say) answers with the first
    # call's action and runs nothing twice. priority: 1 (highest) to 5; 3 by default.
    # retry: run a failed call again, e.g. {"max_attempts": 3, "initial_interval": 1.0,
    # "backoff_coefficient": 2.0, "maximum_interval": 60.0, "non_retryable_error_codes":
    # ["bad_data"]} (intervals in seconds); over the plugin's own policy. wait: the call
    # answers once the action has ended, so that result() needs no second round trip (for a
    # call whose progress is not followed: the call blocks until then).

    def create(
        self,
        model_type: str,
        args: Sequence[Any] = (),
        kwargs: Optional[Dict[str, Any]] = None,
        timeout_seconds: Optional[float] = None,
        request_id: Optional[str] = None,
        priority: Optional[int] = None,
        retry: Optional[Dict[str, Any]] = None,
        wait: bool = False,
    ) -> Run:
        request = engine_service_pb2.CreateInstanceRequest(model_type=model_type, **self._request(args, kwargs, timeout_seconds, request_id, priority, retry, wait))
        return Run(self, self.engine.CreateInstance(request, metadata=self._metadata).action, _model_result)

    def fit(
        self,
        model_id: str,
        args: Sequence[Any] = (),
        kwargs: Optional[Dict[str, Any]] = None,
        timeout_seconds: Optional[float] = None,
        request_id: Optional[str] = None,
        priority: Optional[int] = None,
        retry: Optional[Dict[str, Any]] = None,
        wait: bool = False,
    ) -> Run:
        request = engine_service_pb2.FitRequest(model_id=model_id, **self._request(args, kwargs, timeout_seconds, request_id, priority, retry, wait))
        return Run(self, self.engine.Fit(request, metadata=self._metadata).action, _model_result)

    def predict(
        self,
        model_id: str,
        args: Sequence[Any] = (),
        kwargs: Optional[Dict[str, Any]] = None,
        timeout_seconds: Optional[float] = None,
        request_id: Optional[str] = None,
        priority: Optional[int] = None,
        retry: Optional[Dict[str, Any]] = None,
        wait: bool = False,
    ) -> Run:
        request = engine_service_pb2.PredictRequest(model_id=model_id, **self._request(args, kwargs, timeout_seconds, request_id, priority, retry, wait))
        return Run(self, self.engine.Predict(request, metadata=self._metadata).action, _predict_result)

    def plugins(self) -> List[Dict[str, Any]]:
        """The loaded plugins, as proto3 JSON dicts: model types and data-access functions with
        the JSON Schemas their calls declare (`schemas: [{call, args, kwargs, state}]`)."""
        response = self.engine.ListPlugins(engine_service_pb2.ListPluginsRequest(), metadata=self._metadata)
        return [json_format.MessageToDict(p) for p in response.plugins]

    def servers(self) -> List[Dict[str, Any]]:
        """The servers of a cluster (several on one PostgreSQL database), as proto3 JSON dicts:
        name, address, host, pid, since, plugins, modelTypes, dataAccess, thisServer; empty
        for a server on its own."""
        response = self.engine.ListPlugins(engine_service_pb2.ListPluginsRequest(), metadata=self._metadata)
        return [json_format.MessageToDict(s) for s in response.servers]

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def _retry_policy(retry: Dict[str, Any]) -> action_pb2.RetryPolicy:
    """A RetryPolicy from a dict with the message's field names, intervals in seconds."""
    unknown = set(retry) - {"max_attempts", "initial_interval", "backoff_coefficient", "maximum_interval", "non_retryable_error_codes"}
    if unknown:
        raise ValueError(f"retry: unknown keys {sorted(unknown)}; use max_attempts, initial_interval, backoff_coefficient, maximum_interval, non_retryable_error_codes")
    policy = action_pb2.RetryPolicy(
        max_attempts=int(retry.get("max_attempts", 0)),
        backoff_coefficient=float(retry.get("backoff_coefficient", 0)),
        non_retryable_error_codes=list(retry.get("non_retryable_error_codes", [])),
    )
    for key in ("initial_interval", "maximum_interval"):
        if key in retry:
            getattr(policy, key).FromMilliseconds(int(float(retry[key]) * 1000))
    return policy
