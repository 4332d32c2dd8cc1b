"""The reference ResNets' tables: depths, blocks, widths, parameter counts.

A leaf module (no imports): the builders, the checkpoint reader and the
converter all read these tables.
"""

# torch's BatchNorm2d: eps 1e-5; momentum=0.1 updates `running = 0.9 running
# + 0.1 batch`, and Keras's momentum is the weight of the old value.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9

STAGE_WIDTHS = (64, 128, 256, 512)

# depth -> (block kind, blocks per stage), as in the reference constructors.
ARCHITECTURES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}

# Trainable parameters at 1000 classes, as torch counts them (no BN running
# statistics): (depth, groups) -> count; `None`: the plain ResNet; "se":
# SE-ResNet (reduction 16; the SGE paper's table: SE-ResNet-50 28.09M,
# SE-ResNet-101 49.33M).
PARAMETER_COUNTS = {
    (18, 64): 11_690_536,
    (18, None): 11_689_512,
    (34, 64): 21_799_720,
    (34, None): 21_797_672,
    (50, 64): 25_559_080,
    (50, None): 25_557_032,
    (101, 64): 44_553_384,
    (101, None): 44_549_160,
    (152, 64): 60_199_208,
    (152, None): 60_192_808,
    (18, "se"): 11_778_592,
    (34, "se"): 21_958_868,
    (50, "se"): 28_088_024,
    (101, "se"): 49_326_872,
    (152, "se"): 66_821_848,
}


def narrowest_block_channels(depth):
    """The channel count of a ResNet's narrowest block output (64 or 256)."""
    kind, _ = ARCHITECTURES[depth]
    return STAGE_WIDTHS[0] * EXPANSION[kind]


def describe(depth, groups, classes):
    """E.g. `"SGE-ResNet-50 (groups=64, 1000 classes)"`."""
    name = f"{'SGE-' if groups is not None else ''}ResNet-{depth}"
    sge = f"groups={groups}" if groups is not None else "no SGE"
    head = f"{classes} classes" if classes is not None else "no classifier"
    return f"{name} ({sge}, {head})"
