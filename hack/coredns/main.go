// CoreDNS with only the plugins the local cluster's DNS needs (hack/dns.sh): the
// kubernetes plugin answers cluster.local from the API server; nothing is forwarded
// upstream, so pods can resolve Services and nothing else.
package main

import (
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"

	"github.com/coredns/coredns/coremain"
)

func main() { coremain.Run() }
