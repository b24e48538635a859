"""What the course teaches, top to bottom: `features` (VGG's named feature maps) -> `losses` (the Gram matrix, the
content, style and TV terms) -> `objective` (targets computed once, the weighted objective) -> `settings` (every knob,
its default and why) -> `loop` (the optimisation loop, its step and optimisers, with `lbfgs`) -> `result`. Nothing
here imports the rest of nstlib (tests/test_repo.py checks): the engine, the I/O and the apps wrap it.
"""
