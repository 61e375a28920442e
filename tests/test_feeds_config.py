"""Serve settings refused at start (break-feeds F13, F16, F1's cap)."""

from __future__ import annotations

import pytest

from fhir_server import cli
from fhir_server.config import ConfigError, resolve_serve_config


def test_a_list_of_empty_ae_titles_is_refused_not_read_as_allow_all(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--dicom-allowed-aes", ",,,"])
    assert exited.value.code == 2
    assert "',,,' holds no AE title" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="FHIR_FUSION_DICOM_ALLOWED_AES: ' , ' holds no AE"):
        resolve_serve_config({}, {"FHIR_FUSION_DICOM_ALLOWED_AES": " , "})
    # empty still means any caller; a real list is kept
    assert resolve_serve_config({}, {"FHIR_FUSION_DICOM_ALLOWED_AES": ""}).dicom_allowed_aes == ()
    assert resolve_serve_config({}, {"FHIR_FUSION_DICOM_ALLOWED_AES": "CT1,,MR2"}
                                ).dicom_allowed_aes == ("CT1", "MR2")


def test_two_listeners_on_one_port_are_refused_naming_both() -> None:
    with pytest.raises(ConfigError, match="--port and --mllp-port are both 18096"):
        resolve_serve_config({"port": 18096, "mllp_port": 18096}, {})
    with pytest.raises(ConfigError, match="--mllp-port and --dicom-port are both 18097"):
        resolve_serve_config({"mllp_port": 18097, "dicom_port": 18097}, {})
    # 0 turns a listener off (or picks a free port): never a clash
    assert resolve_serve_config({"port": 0, "mllp_port": 0, "dicom_port": 0}, {}).port == 0


def test_the_resource_cap_is_a_positive_setting() -> None:
    assert resolve_serve_config({}, {}).max_input_resources == 2000
    assert resolve_serve_config({}, {"FHIR_FUSION_MAX_INPUT_RESOURCES": "50"}
                                ).max_input_resources == 50
    with pytest.raises(ConfigError, match="MAX_INPUT_RESOURCES: 0 is not a positive"):
        resolve_serve_config({}, {"FHIR_FUSION_MAX_INPUT_RESOURCES": "0"})
