// Package natsauth decides who may do what on NATS when weft runs on a
// cluster: the permissions each stage's job needs, derived from the
// topology (Permissions), the verification of the Kubernetes
// service-account token a stage presents (Verifier), and the NATS auth
// callout that joins the two (Callout) and gives each connection a user
// with only those permissions.
//
// It owns the permission model; it must not know any stage kind (it reads
// only what the topology declares: inputs, outputs, deploy mode).
package natsauth
