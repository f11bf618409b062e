"""The online API and the web calculator, one idea per module.

- ``settings``: constants and the ``CRLM_*`` environment, validated once;
- ``errors``: a refused request (status, field, rule);
- ``request_models`` / ``validation``: the patient model generated from ``crlm.schema`` and its checks;
- ``responses``: the answers' models (OpenAPI) and their serialisation;
- ``engine``: the OS and RFS Predictors plus the clinical scores -> one answer per patient;
- ``store`` / ``readiness``: loading the models in the background, readiness across worker processes;
- ``batching``: merging concurrent single-patient requests into one Predictor call;
- ``guard``: API key, body size, content type and JSON, before BentoML sees a byte;
- ``model_checks``: a loaded model against its slot (endpoint, schema, library versions);
- ``openapi``: the complete OpenAPI document; ``bentoml_fixes``: three BentoML middleware defects corrected;
- ``launch``: ``crlm serve``; ``service``: the BentoML class service and the calculator (``static/``).

Only ``service`` and ``bentoml_fixes`` import BentoML; everything else is testable in-process. Request bodies
are never logged.
"""
