"""archlint: a design linter for PyTorch architectures.

    import archlint
    report = archlint.lint(model, torch.randn(1, 3, 224, 224))
    for finding in report.findings:
        print(finding.code, finding.module, finding.message)
"""
__version__ = "0.2.0"

# Names are imported on first use: `archlint check` must be able to skip files and answer from
# its cache without paying for `import torch`, which `archlint.api` needs.
_LAZY = {
    "lint": "api", "check_paths": "driver",
    "Report": "results", "ModelReport": "results",
    "Finding": "findings", "Fix": "findings", "Location": "findings", "Severity": "findings",
}

__all__ = ["lint", "check_paths", "Report", "ModelReport", "Finding", "Fix", "Location", "Severity",
           "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'archlint' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
