"""bert-serving: BERT as a service. Start it once, then map sentences to fixed-length vectors
from anywhere in two lines; a drop-in successor of bert-as-service 1.10.0."""

__version__ = "2.0.0"
