"""The networks that turn token ids into hidden states, one module per family.

`bert.BertModel` runs BERT on packed (unpadded) sequences; every family here speaks Hugging
Face's weight names, the form `loading` converts each checkpoint layout to.
"""
