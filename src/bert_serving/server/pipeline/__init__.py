"""Scheduling, and nothing else: no sockets, no torch, no HTTP.

    edge ──submit──▶ intake ──▶ batcher ──next_batch──▶ (replicas) ──▶ sink ──reply──▶ edge
                     tokenize    cross-client batches                  reassemble per request

`request` is the unit of work, `stats` the counters every stage writes, `gateway` the face
the edges see, `tasks` what a served task answers (and a head's scores per request).
"""
