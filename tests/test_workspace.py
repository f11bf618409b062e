"""A workspace a user understands: crlm init, the draft mapping, paths resolved where the user expects."""

import yaml
from typer.testing import CliRunner

from crlm.cli import app
from crlm.config import load_config
from crlm.paths import project_root
from crlm.workspace import candidate_fields

runner = CliRunner()


def test_candidate_fields_from_usual_spellings():
    assert candidate_fields("Gender")[0] == "sex"
    assert candidate_fields("CEA_pre")[0] == "cea_ng_ml"
    assert candidate_fields("KRAS mut")[0] == "kras_status"
    assert candidate_fields("max_diameter_mm")[0] == "largest_metastasis_cm"
    assert candidate_fields("zzz_qq") == []


def test_init_from_an_export_drafts_every_column(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("CRLM_HOME", raising=False)
    result = runner.invoke(app, ["init", str(tmp_path / "ws"), "--from", str(data_dir / "export_mm.csv")])
    assert result.exit_code == 0, result.output
    ws = tmp_path / "ws"
    mapping = (ws / "mappings" / "ws.yaml").read_text()
    for column in ("id", "age", "gender", "nmets", "size_mm", "cea", "response_fraction", "death", "os"):
        assert f"  {column}:" in mapping  # every source column is listed
    parsed = yaml.safe_load(mapping)
    assert parsed["rename"]["gender"] == "sex" and parsed["units"]["largest_metastasis_cm"] == "mm"
    assert "codes: 2 (2), 1 (1)" in mapping  # the codes seen
    # inside the workspace, everything resolves there; relative config paths against the config's folder
    monkeypatch.chdir(ws / "configs")
    assert project_root() == ws.resolve()
    config = load_config(ws / "configs" / "ws-os.yaml")
    assert config.cohort.file == (ws / "configs" / "../data/export_mm.csv")
    assert config.cohort.file.exists() and config.reference == "auto"
    again = runner.invoke(app, ["init", str(ws)])
    assert again.exit_code == 0 and "wrote" not in again.output  # nothing is overwritten


def test_outside_a_checkout_and_workspace_the_working_directory_is_the_root(tmp_path, monkeypatch):
    monkeypatch.delenv("CRLM_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert project_root() == tmp_path.resolve()
    monkeypatch.setenv("CRLM_HOME", str(tmp_path / "home"))
    assert project_root() == tmp_path / "home"


def test_serve_runs_the_installed_service_and_reads_models_from_the_workspace(tmp_path, monkeypatch):
    from crlm.serving.launch import SERVICE_IMPORT, serve_command
    from crlm.serving.settings import ModelConfig

    monkeypatch.delenv("CRLM_HOME", raising=False)
    (tmp_path / "crlm-workspace.yaml").write_text("workspace: x\n")
    monkeypatch.chdir(tmp_path)
    assert project_root() == tmp_path.resolve()  # models and runs: the workspace
    command = serve_command()
    assert SERVICE_IMPORT in command and "--working-dir" not in command  # the package, from any directory
    assert ModelConfig.from_env({}).models_dir == tmp_path.resolve() / "models"
