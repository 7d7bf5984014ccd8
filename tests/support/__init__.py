"""What the tests share: one fake of each client and server object, the events, the servers and the faults.

- kafka.py, mongo.py, pipeline.py, telemetry.py: the fakes (a record, a consumer, a producer, a
  collection, a database, writers, dead letters, a buffer, a publisher), and the pipeline and the
  redelivery loop built by the worker's own factories around them;
- routes.py: the routing table's topics and collections, read from the worker;
- events.py: the one factory of orchestrator events (tests, demo, benchmarks);
- servers.py: which servers a session talks to, and the `standin_deviation` marker;
- standins.py: the local stand-in servers; faultproxy.py, mongo_faults.py: faults between the worker
  and a real server; processes.py: no child process outlives its test; virtual_time.py: a loop on a
  virtual clock.

The test_*.py files here specify these tools; they judge every other test.
"""
