"""How the core's steps run on a device: `runtime` (device and precision, decided once), `graphs` (the step
captured in a CUDA graph) and `memory` (estimates before a run, freeing after running out)."""
