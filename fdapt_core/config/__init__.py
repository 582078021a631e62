"""The run configuration: `run` holds the typed `RunConfig` (YAML in, `key=value` overrides,
validation, the config hash), `sections` its sections' dataclasses (data, partition, model,
training, federation, freezing, …), and `build` how a section is built and checked from YAML,
field by field. May import the registries its choices come from (data partitioners, presets,
strategies, codecs, freeze allocations, executors) and errors; nothing of a run."""
