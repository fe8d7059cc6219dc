"""archlint: a design linter for PyTorch architectures.

    import archlint
    report = archlint.lint(model, torch.randn(1, 3, 224, 224))
    for finding in report.findings:
        print(finding.code, finding.module, finding.message)
"""
__version__ = "0.1.0"

from .api import ModelReport, Report, check_paths, lint  # noqa: E402
from .findings import Finding, Fix, Location, Severity  # noqa: E402

__all__ = ["lint", "check_paths", "Report", "ModelReport", "Finding", "Fix", "Location", "Severity",
           "__version__"]
