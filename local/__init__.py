"""Running on one machine, without a cluster: the end-to-end demo, a local S3 server (SeaweedFS,
for the demo and the tests) and the helpers that stop processes by PID."""
