"""Data-flow-space merging: layer paths through several models (:mod:`bambo.dataflow.path`), the
models they build, sharing every weight (:mod:`bambo.dataflow.build`), and the search space of
include bits and input scales (:mod:`bambo.dataflow.space`)."""

from bambo.dataflow.build import LAYER_LISTS, build_path_model, layer_list_of, shallow_clone
from bambo.dataflow.path import Hop, LayerPath
from bambo.dataflow.space import DataFlowSpace

__all__ = ["LAYER_LISTS", "DataFlowSpace", "Hop", "LayerPath", "build_path_model", "layer_list_of", "shallow_clone"]
