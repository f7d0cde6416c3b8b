"""An experiment as one TOML file: settings of every stage, reading and writing the file, `run` with its stage
caches and the models loaded once across stages."""
