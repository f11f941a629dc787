"""The link between the edge processes (router, intakes, HTTP) and the coordinator.

`uplink.Uplink` is the pipeline as an edge process sees it (the `Gateway`: it tokenizes there and
sends the requests on), `hub.Hub` the coordinator's side of every edge's channel (requests into
the batcher, answers back, the calls of views and control), `frames` the messages between them.
"""
