"""autolabel: labeled training data for computer vision with almost no human labeling.

Two methods on one platform:

* :mod:`autolabel.handsoff` -- HandsOff (CVPR 2023): a GAN plus <=50 labeled images -> unlimited labeled images.
* :mod:`autolabel.hilander` -- Hi-LANDER (ICCV 2021): hierarchical GNN clustering of unseen categories.

The orchestration layer (stages, pipelines, launchers, CLI) lives in the separate ``pipelines`` package.
"""

__version__ = "0.1.0"
