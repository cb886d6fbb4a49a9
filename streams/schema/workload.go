package schema

// WorkloadOf is the top controller of p: its resolved workload, else (a
// pod written before the metadata provider resolved workloads) its
// controller owner reference, else nil (a bare pod, or no pod).
func WorkloadOf(p *Pod) *OwnerRef {
	if w := p.GetWorkload(); w.GetKind() != "" && w.GetName() != "" {
		return w
	}
	for _, o := range p.GetOwners() {
		if o.GetController() && o.GetKind() != "" && o.GetName() != "" {
			return o
		}
	}
	return nil
}
