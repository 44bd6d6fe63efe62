"""Plinth's Python client: create, fit and predict with plain values, follow an action's
progress, cancel it; the three gRPC services' stubs for everything else.

    from plinth_client import Client, data_access

    client = Client("127.0.0.1:50051")
    model_id = client.create("iris.DecisionTree").result().model_id
    run = client.fit(model_id, args=[data_access("iris.inputs"), data_access("iris.outputs")])
    for p in run.progress():
        print(p.status, p.state)
    print(run.result().state["accuracy"])
    print(client.predict(model_id, args=[[[5.1, 3.5, 1.4, 0.2]]]).result().prediction)  # ['setosa']
"""
from ._client import ActionError, Client, ModelResult, PredictResult, Progress, Run
from ._values import DataAccess, Summary, Tensor, data_access

__all__ = [
    "ActionError",
    "Client",
    "DataAccess",
    "ModelResult",
    "PredictResult",
    "Progress",
    "Run",
    "Summary",
    "Tensor",
    "data_access",
]
