// Command ferretdb-local serves a MongoDB-compatible server on loopback,
// backed by SQLite, for local runs and tests (production uses MongoDB).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	dataDir := flag.String("data-dir", "./data/ferretdb", "directory holding the SQLite databases")
	flag.Parse()

	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		log.Fatalf("data dir: %v", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		log.Fatalf("data dir: %v", err)
	}

	// WAL with synchronous=NORMAL: a commit reaches the operating system before it is
	// acknowledged, so a killed server loses nothing; only a machine crash can lose the last
	// commits. This store serves local runs and tests; production runs MongoDB.
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Handler:   "sqlite",
		SQLiteURL: "file:" + dir + "/?_pragma=synchronous(normal)",
	})
	if err != nil {
		log.Fatalf("ferretdb: %v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Run(ctx)
	}()
	fmt.Fprintf(os.Stderr, "ferretdb-local listening on %s, data in %s\n", *listen, dir)
	<-done
}
