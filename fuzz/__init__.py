"""Coverage-guided fuzzing of iotdtls with atheris (see docs/fuzzing.md).

Nothing here imports `iotdtls`: the runner must import it under atheris' instrumentation."""

#: The fuzz targets of `fuzz.targets.TARGETS`, by name.
TARGET_NAMES = ("messages", "records", "client", "server")
