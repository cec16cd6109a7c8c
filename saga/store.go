package saga

import (
	"context"
	"errors"
	"time"
)

// Store persists saga instances and participants' deduplication records.
// Implementations must be safe for concurrent use by several processes: the
// orchestrator relies on Update's version check, never on a process-local
// lock. Package saga/sqlstore implements it on PostgreSQL and SQLite.
type Store interface {
	// Create inserts a new instance (Version 1), or fails with an error
	// matching ErrExists when its id is taken.
	Create(ctx context.Context, in *Instance) error
	// Load returns the instance with id, or an error matching ErrNotFound.
	Load(ctx context.Context, id string) (*Instance, error)
	// Update replaces the instance whose stored version is in.Version-1
	// with in, or fails with an error matching ErrConflict.
	Update(ctx context.Context, in *Instance) error
	// RecordRequest persists a manager request (Instance.Request and its
	// history entry) made by someone who holds no lease: like Update, it
	// replaces the instance whose stored version is in.Version-1 with in,
	// or fails with an error matching ErrConflict, but it keeps the stored
	// Owner and LeaseUntil.
	RecordRequest(ctx context.Context, in *Instance) error
	// List returns the instances matching f, oldest first.
	List(ctx context.Context, f ListFilter) ([]*Instance, error)
	// Due returns the ids of the instances whose WakeAt is set and not
	// after now — in any state: a pending Request makes a Failed or
	// finished instance due — and of the active instances whose LeaseUntil
	// is not after now; at most limit, earliest WakeAt first.
	Due(ctx context.Context, now time.Time, limit int) ([]string, error)
	// RenewLeases extends to until the lease of every active instance that
	// owner holds.
	RenewLeases(ctx context.Context, owner string, until time.Time) error
	// ReleaseLease ends owner's lease on instance id at once, so that any
	// orchestrator takes it over.
	ReleaseLease(ctx context.Context, id, owner string) error

	// Claim reserves key for owner until the given time. With no record it
	// creates a running one (Runs 1) and returns claimed true; a running
	// record whose claim expired — its holder died or stopped renewing — is
	// taken over the same way, with Runs counting the claims. Otherwise it
	// returns the record and claimed false.
	Claim(ctx context.Context, key, owner string, until time.Time) (rec *Record, claimed bool, err error)
	// RenewClaim extends owner's running claim on key to until, or fails
	// with an error matching ErrConflict when owner no longer holds it.
	RenewClaim(ctx context.Context, key, owner string, until time.Time) error
	// Lookup returns the record of key, or nil when there is none.
	Lookup(ctx context.Context, key string) (*Record, error)
	// Complete finishes owner's claim on key with the outcome in rec, or
	// fails with an error matching ErrConflict when owner no longer holds
	// it.
	Complete(ctx context.Context, key, owner string, rec *Record) error
	// Release drops owner's running claim on key.
	Release(ctx context.Context, key, owner string) error
}

// ListFilter selects instances. Zero fields select everything.
type ListFilter struct {
	Name  string
	State State
	// Limit bounds the result; zero means 1000.
	Limit int
}

// Record is a participant's deduplication record of one command.
type Record struct {
	Key string
	// Done is false while the command is being handled.
	Done bool
	// Until is when the claim of a running record expires, unless its
	// holder renews it.
	Until time.Time
	// Runs counts the claims of the record: more than one means that a
	// holder's claim expired while it handled the command and another
	// took it over.
	Runs int
	// Outcome is OutcomeOK or OutcomeFailed once Done.
	Outcome string
	Reply   []byte
	Error   string
}

// Errors of Store implementations.
var (
	// ErrNotFound: no saga instance with that id.
	ErrNotFound = errors.New("not found")
	// ErrExists: a saga instance with that id exists already.
	ErrExists = errors.New("already exists")
	// ErrConflict: the instance changed since it was loaded.
	ErrConflict = errors.New("version conflict")
)
