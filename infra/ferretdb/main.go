// Command ferretdb runs an embedded FerretDB v1 (SQLite backend) so the project has a
// MongoDB-wire document store on machines without mongod. Embedding the public package
// avoids the version.txt panic of `go install .../cmd/ferretdb` (FerretDB issue 2982);
// the embedded package never starts the telemetry reporter and disables it explicitly.
package main

import (
	"context"
	"flag"
	"log"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // profiles on --pprof-addr only
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	dir := flag.String("sqlite-dir", "data", "directory holding the SQLite databases")
	level := flag.String("log-level", "warn", "log level: debug, info, warn, error")
	pprofAddr := flag.String("pprof-addr", "", "serve Go's pprof profiles on this loopback address (empty: off)")
	idIndex := flag.Duration("id-index-every", 200*time.Millisecond,
		"how often to look for collections lacking the `_id` path index (0: never; see idindex.go)")
	flag.Parse()

	if err := os.MkdirAll(*dir, 0o755); err != nil {
		log.Fatal(err)
	}

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		log.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	lock, err := lockDir(*dir)
	if err != nil {
		log.Fatal(err)
	}
	defer lock.Close()

	// a file without FerretDB's metadata would fail the whole start (see setaside.go)
	if _, err := setAsideStrayFiles(context.Background(), *dir, logger); err != nil {
		log.Fatal(err)
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + *dir + "/",
	})
	if err != nil {
		for path, problem := range suspectFiles(context.Background(), *dir) {
			logger.Error("the store did not start; suspect database file", "file", path, "problem", problem)
		}
		log.Fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *pprofAddr != "" {
		go func() { logger.Warn("pprof", "error", http.ListenAndServe(*pprofAddr, nil)) }()
	}

	if *idIndex > 0 {
		go indexIDs(ctx, *dir, *idIndex, logger)
	}

	logger.Warn("ferretdb listening", "addr", *listen, "uri", f.MongoDBURI())
	if err := f.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
