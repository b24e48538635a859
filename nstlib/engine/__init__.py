"""How the core's steps run on a device: `runtime` (device, precision), `graphs` (CUDA graphs), `memory`."""
