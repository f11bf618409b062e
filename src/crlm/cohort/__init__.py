"""Getting patients in: file loading with mappings, the real TCIA cohort, the simulator."""

from crlm.cohort.base import Cohort, CohortValidationError, Problem, ValidationReport, make_y, to_canonical
from crlm.cohort.loader import MappingError, load_cohort, read_mapping
from crlm.cohort.simulate import simulate_cohort
from crlm.paths import TCIA_FILE, TCIA_MAPPING, data_dir


def load_tcia(strict: bool = True) -> Cohort:
    """The vendored TCIA Colorectal-Liver-Metastases cohort (197 MSKCC patients, CC BY 4.0)."""
    return load_cohort(data_dir() / TCIA_FILE, data_dir() / TCIA_MAPPING, strict=strict)


__all__ = ["Cohort", "CohortValidationError", "MappingError", "Problem", "ValidationReport", "load_cohort",
           "load_tcia", "make_y", "read_mapping", "simulate_cohort",
           "to_canonical"]
