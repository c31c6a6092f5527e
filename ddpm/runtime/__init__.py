"""The runtime of a run: several processes (`distributed`), arrays replicated over devices
(`replicas`), orbax checkpoints (`checkpointing`), portable .safetensors weights
(`weights_file`), the XLA CPU flags set before JAX starts (`xla_flags`) and the command
line's persistent compilation cache (`compilation_cache`).

Nothing is imported here: `ddpm/__init__.py` imports `xla_flags` before JAX creates its
backends, and importing the package must not pull in orbax or JAX for that.
"""
