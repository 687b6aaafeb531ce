"""LegSegNet models: the registry, the per-user cache, downloads, offline installs and integrity checks.

The API the command line and the Slicer module use:
    model_status(name) -> ModelStatus         quick state: installed / not installed / corrupt, folds, path
    list_models() -> [ModelStatus]             registry models and models installed under other names
    download_model(name, folds=None, progress=cb, cancel=fn, timeout=60, replace=False, deadline=None) -> Path
    install_model_from(zip_or_folder, name="legsegnet", replace=False) -> Path
    verify_model(name) -> [problem, ...]       full SHA-256 check (empty list: intact)
    remove_model(name) -> Path
    resolve_model(name_or_folder) -> Path      what the engine loads
"""


import importlib

# Names are imported on first use, so that status and registry queries work before torch is installed
# (the Slicer module shows model status at start-up; only validation and downloads need torch).
_HOMES = {
    "checksums": ("forget_recorded_checksums",),
    "download": ("ChecksumMismatchError", "DownloadCancelled", "DownloadError", "DownloadProgress",
                 "DownloadTimeoutError", "download_model"),
    "folds": ("available_folds", "choose_folds", "parse_folds"),
    "install": ("ModelExistsError", "UnsafeArchiveError", "check_install_source", "install_model_from", "remove_model"),
    "paths": ("legsegnet_home", "models_dir"),
    "registry": ("ModelNotInstalledError", "ModelSpec", "UnknownModelError", "get_model_spec", "load_registry",
                 "resolve_model"),
    "status": ("CORRUPT", "INSTALLED", "NOT_INSTALLED", "ModelStatus", "list_models", "model_status", "verify_model"),
    "validate": ("ModelValidationError", "validate_model_folder"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_MODULE_OF[name]}")
    return getattr(module, name)
