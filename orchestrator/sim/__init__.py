"""A discrete-event simulation of one long training job on thousands of hosts.

Only the clock, the ranks and the hardware are simulated: every interruption
goes through the production detectors, classifier, failure and scaling
policies and the catalog writer, so a simulated run's catalog reads like a real
one (`orchestrator report` works on it).
"""
