"""Kubernetes node remediation: a cordoned host's node is cordoned, tainted and labelled too.

Without it the Kubernetes scheduler puts the next pod back on the bad GPU. The
host name is the Ray node's `host` label, which the Helm chart sets to the
Kubernetes node name, so no lookup maps one to the other. Needs the optional
`k8s` extra (the kubernetes client); nothing here is imported unless
remediation is turned on.
"""
