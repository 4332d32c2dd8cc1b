from keras_sge.layers.sge import SGE

__all__ = ["SGE"]
