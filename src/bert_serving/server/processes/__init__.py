"""The server's processes, and what they share.

``bert-serving-start`` is the coordinator: it holds the batcher, the sink and the replicas'
feeders, and supervises every other process of the serving path (`supervisor`): the router,
which owns the public ZeroMQ ports (`zmq.router_main`), the intake processes behind it
(`zmq.intake_main`) and the HTTP processes on the shared ``-http_port`` (`http.worker_main`); the
replicas are supervised by their pool (`replicas.pool`). Each child is started the same way
(`child.spawn`: a fresh interpreter, its orders as JSON on standard input, one end of a socket
pair), is named by its role in ``ps`` (`child.set_title`), and talks to the coordinator over
that socket pair in frames of bytes (`channel`), never pickles.
"""
