// Command etcd is etcd's own entry point (etcdmain.Main), built from the go.etcd.io/etcd/server/v3 module: the
// command's main package lives in etcd's root module, whose replace directives only work inside its repository.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
