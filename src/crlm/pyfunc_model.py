"""The MLflow models-from-code pyfunc around a Predictor bundle (``mlflow.pyfunc.log_model(python_model=<this
file>, artifacts={"predictor": <bundle dir>})``).

``predict(df)`` returns the flat table (risk, calibrated survival with the bounds of its 95% confidence interval,
i.e. estimation uncertainty, at each horizon, risk group, median, explanation, warnings); ``params={"output": "json"}`` returns one JSON answer per patient instead.
``loaded.unwrap_python_model().predictor`` is the Predictor itself (the API uses it).
"""

import json

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from crlm.predictor import Predictor


class CRLMPredictorModel(PythonModel):
    def load_context(self, context):
        self.predictor = Predictor.load(context.artifacts["predictor"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        output = (params or {}).get("output", "table")
        if output == "json":
            return pd.DataFrame({"answer": [json.dumps(a) for a in self.predictor.predict(model_input)]})
        return self.predictor.predict_frame(model_input)


mlflow.models.set_model(CRLMPredictorModel())
