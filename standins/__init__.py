"""Stand-ins for the external systems: EDP, AWS (S3/SES) and the HMI team's CI.

Each one is a real server (or writes through one), so the pipeline talks to it exactly as it
talks to the real system. The local and demo stages and the tests use them; beta never does.
The EDP stand-in can be made slow or failing, at start or at runtime, to test how the pipeline
copes.
"""
