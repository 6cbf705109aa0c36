//! The command line: every command, option and help text (with examples).
//! Parsing only; [`crate::run`] does the work.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;
use trellis_types::Role;

/// Where the CLI looks for a node when neither --node nor TRELLIS_NODE says.
pub const DEFAULT_NODE: &str = "http://127.0.0.1:8080";

const MAIN_EXAMPLES: &str = "\
Examples:
  trellis status
  trellis demo                                   # the whole supply-chain story on a dev chain
  trellis keys new --out ops.pem
  trellis --key ops.pem receivable holdings
  trellis --dev-account core-acme/ops receivable issue --to supplier-t1 \\
      --amount '1,000,000.00 CNY' --maturity +90d --invoice INV-001
  trellis --output json receivable show 1 | jq .status
  trellis events --from 1 --follow --kind issued
  trellis bench --start                          # load: the receivables mix on a dev node

Exit codes: 0 ok, 1 other, 2 usage, 3 rejected by the node, 4 failed in execution
(contract error), 5 commit timeout, 6 node unreachable, 7 key or file problem,
8 not found, 9 below the bench's floor, 130 interrupted. See docs/cli.md.

Environment: TRELLIS_NODE, TRELLIS_KEY, TRELLIS_KEY_PASSWORD, TRELLIS_NEW_KEY_PASSWORD,
TRELLIS_OUTPUT, TRELLIS_CONTRACT, TRELLIS_NODE_BIN, RUST_LOG.";

#[derive(Parser, Debug)]
#[command(
    name = "trellis",
    version,
    about = "Trellis from the command line: keys, receivables, blocks, transactions, events, and the demo",
    long_about = "Trellis from the command line, for people at core enterprises, suppliers and banks.\n\
                  Talks to a Trellis node's HTTP API through trellis-sdk.\n\
                  Results go to stdout (tables, or one JSON document with --output json);\n\
                  progress, warnings and errors go to stderr.",
    after_help = MAIN_EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Node API URL; repeat or give a comma list for failover.
    #[arg(
        long = "node",
        global = true,
        env = "TRELLIS_NODE",
        value_delimiter = ',',
        default_value = DEFAULT_NODE,
        value_name = "URL"
    )]
    pub nodes: Vec<String>,

    /// Sign with this key file (PKCS#8 PEM, e.g. from `trellis keys new` or openssl).
    #[arg(long, global = true, env = "TRELLIS_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Read the key file's password from FILE (first line). Or set TRELLIS_KEY_PASSWORD;
    /// on a terminal the CLI asks. Never a plain flag.
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Sign with the INSECURE public dev key of a dev/local chain account, e.g. core-acme/ops.
    #[arg(long, global = true, value_name = "ORG/ops")]
    pub dev_account: Option<String>,

    /// How results are printed on stdout.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "TRELLIS_OUTPUT",
        default_value_t = OutputFormat::Table
    )]
    pub output: OutputFormat,

    /// How long to wait for a transaction to commit (30s, 2m, 500ms).
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s", value_parser = parse_duration_arg)]
    pub timeout: Duration,

    /// Address of the receivables contract (hex). Default: the one the dev and local genesis deploy.
    #[arg(long, global = true, env = "TRELLIS_CONTRACT", value_name = "ADDRESS")]
    pub contract: Option<trellis_types::Address>,

    /// The chain's genesis file: verified reads (`receivable show --verify`)
    /// trust only its validators, and transactions are signed for its chain
    /// id. Without it both are the node's word.
    #[arg(long, global = true, env = "TRELLIS_GENESIS", value_name = "FILE")]
    pub genesis: Option<PathBuf>,

    /// A certificate authority (PEM) to trust for `https://` nodes, beside
    /// the public roots: the consortium's or a member's own CA in front of
    /// its nodes.
    #[arg(long, global = true, env = "TRELLIS_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Tables and sentences for people.
    Table,
    /// Exactly one JSON document on stdout (JSON Lines for `events --follow`).
    Json,
}

fn parse_send_every(s: &str) -> Result<Duration, String> {
    match parse_duration_arg(s)? {
        d if (Duration::from_millis(1)..=Duration::from_secs(1)).contains(&d) => Ok(d),
        _ => Err(format!("`{s}`: give 1ms to 1s")),
    }
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    crate::when::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make, inspect and import account keys (ed25519, PKCS#8 PEM).
    #[command(subcommand, after_help = KEYS_EXAMPLES)]
    Keys(KeysCommand),

    /// Issue, move, split, finance and settle receivables; look at pieces, lineage, trees, holdings.
    #[command(subcommand, visible_alias = "rcv", after_help = RECEIVABLE_EXAMPLES)]
    Receivable(ReceivableCommand),

    /// Admit organisations, change their roles, upgrade contracts: proposals a majority of the admin organisations approve.
    #[command(subcommand, visible_alias = "gov", after_help = GOVERNANCE_EXAMPLES)]
    Governance(GovernanceCommand),

    /// A transaction's status and receipt.
    #[command(
        after_help = "Examples:\n  trellis tx 5f1c…e2\n  trellis --output json tx 5f1c…e2 | jq .receipt.events\n  trellis --genesis genesis.json tx 5f1c…e2 --verify"
    )]
    Tx {
        /// The transaction hash (hex).
        hash: String,
        /// Check the transaction and its receipt against the roots of the
        /// header of their block, and the header against the validators'
        /// precommits, trusting the validators of --genesis, else the node's list.
        #[arg(long)]
        verify: bool,
    },

    /// A block: header, commit and transactions.
    #[command(
        after_help = "Examples:\n  trellis block\n  trellis block 42\n  trellis block 3f9a…c1        # by hash\n  trellis --output json block latest\n  trellis --genesis genesis.json block 42 --verify"
    )]
    Block {
        /// `latest` (default), a height, or a block hash.
        #[arg(default_value = "latest")]
        which: String,
        /// Check the block's transactions and receipts against its header,
        /// and the header against the validators' precommits, trusting the
        /// validators of --genesis, else the node's list.
        #[arg(long)]
        verify: bool,
    },

    /// The node's view of the chain: chain id, height, last block, peers.
    #[command(
        after_help = "Examples:\n  trellis status\n  trellis --node http://10.0.0.5:8080 --output json status"
    )]
    Status,

    /// The validator set the genesis fixed: names, organisations, keys, and the votes a block needs.
    #[command(
        after_help = "Examples:\n  trellis validators\n  trellis --output json validators | jq '.validators[].consensus_key'"
    )]
    Validators,

    /// Proofs that validators equivocated (signed two votes for one step), as the node found them, each checked here.
    #[command(
        after_help = "Examples:\n  trellis evidence\n  trellis evidence --from-height 1200\n  trellis --output json evidence | jq '.evidence[].first.voter'"
    )]
    Evidence {
        /// List proofs from this height on.
        #[arg(long, default_value_t = 0)]
        from_height: u64,
    },

    /// Write the chain's blocks, each with the certificate that committed it,
    /// to one file, read from the node's API while it runs: a backup, or a
    /// whole history to check offline with `trellis-node import-chain`.
    #[command(
        after_help = "Examples:\n  trellis export --out chain.export\n  trellis --node http://10.0.0.5:8080 export --out chain.export --to-height 1200\n  trellis-node import-chain --data-dir audit --genesis genesis.json --from chain.export   # executes and checks every block"
    )]
    Export {
        /// The file to write; an existing file is never replaced.
        #[arg(long)]
        out: std::path::PathBuf,
        /// The last height to export (default: the node's head when the export starts).
        #[arg(long)]
        to_height: Option<u64>,
    },

    /// Committed transactions and their events, filtered; --follow keeps streaming.
    #[command(after_help = EVENTS_EXAMPLES)]
    Events(EventsArgs),

    /// Play the whole supply-chain story on a dev chain (starts one if none answers).
    #[command(after_help = DEMO_EXAMPLES)]
    Demo(DemoArgs),

    /// Measure committed throughput and latency under a realistic load (or remarks only).
    #[command(after_help = BENCH_EXAMPLES)]
    Bench(BenchArgs),

    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  trellis completions bash > ~/.local/share/bash-completion/completions/trellis\n  trellis completions zsh > ~/.zfunc/_trellis\n  trellis completions fish > ~/.config/fish/completions/trellis.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

const KEYS_EXAMPLES: &str = "\
Examples:
  trellis keys new --out ops.pem                       # unencrypted, mode 0600
  trellis keys new --out ops.pem --encrypt             # asks for a password (or TRELLIS_NEW_KEY_PASSWORD)
  trellis keys show ops.pem
  trellis --key admin.pem keys add <public key hex>     # an org admin registers it
  openssl genpkey -algorithm ed25519 -out hsm-export.pem
  trellis keys import hsm-export.pem --out ops.pem --encrypt --new-password-file pw.txt";

const GOVERNANCE_EXAMPLES: &str = "\
Examples:
  trellis --key admin.pem gov propose add-organisation --id supplier-t4 --name \"Tier Four Parts\" \\
      --role supplier --admin-key <public key hex>
  trellis --key admin.pem gov propose set-roles --org supplier-t1 --role supplier --role bank
  trellis --key admin.pem gov propose set-roles --org supplier-t1 --suspend
  trellis --key admin.pem gov propose upgrade-contract --contract <address> --wasm receivables.wasm
  trellis --key admin.pem gov propose remove-account --key-to-remove <compromised key hex>
  trellis --key other-admin.pem gov approve <proposal id>
  trellis --key admin.pem gov list";

#[derive(Subcommand, Debug)]
pub enum GovernanceCommand {
    /// Propose a change for your organisation (an admin organisation), approving it; it passes at once if that is a majority.
    #[command(subcommand, after_help = GOVERNANCE_EXAMPLES)]
    Propose(ChangeArgs),
    /// Approve an open proposal for your organisation; the approval that makes the majority carries it out.
    #[command(
        after_help = "Examples:\n  trellis --key admin.pem gov approve 0835f3b2de5eed7f7fce595d2ebe2fcf7e40449db27ceb2f2bc105922e1527f5"
    )]
    Approve {
        /// The proposal id: the hash of the transaction that proposed it.
        id: String,
    },
    /// The open proposals, with the approvals that count and the approvals needed.
    #[command(
        after_help = "Examples:\n  trellis --key ops.pem gov list\n  trellis --key ops.pem --output json gov list | jq '.proposals[] | {id, approvals_counted, needed}'"
    )]
    List,
    /// One open proposal, whole.
    #[command(
        after_help = "Examples:\n  trellis --key ops.pem gov show 0835f3b2de5eed7f7fce595d2ebe2fcf7e40449db27ceb2f2bc105922e1527f5"
    )]
    Show {
        /// The proposal id.
        id: String,
    },
}

/// The changes a proposal can make, each with how long it stays open.
#[derive(Subcommand, Debug)]
pub enum ChangeArgs {
    /// Admit an organisation with its roles and its first key, an organisation admin.
    #[command(
        after_help = "Examples:\n  trellis --key admin.pem gov propose add-organisation --id supplier-t4 --name \"Tier Four Parts\" \\\n      --role supplier --admin-key 7e2f6a12c7421c55dab78cc299e72e49d21d9086af98e13347b1c7c59ac31dc1\n  trellis --key admin.pem gov propose add-organisation --id bank-second --name \"Second Bank\" --role bank \\\n      --admin-key <hex> --lifetime 14d"
    )]
    AddOrganisation {
        /// Its id: lowercase letters, digits and '-', e.g. supplier-t4.
        #[arg(long)]
        id: String,
        /// Its display name.
        #[arg(long)]
        name: String,
        /// A role (repeat for more): core_enterprise, supplier, bank, regulator, admin.
        #[arg(long = "role", required = true, value_parser = parse_role)]
        roles: Vec<Role>,
        /// Its first account key (hex), which adds its others.
        #[arg(long)]
        admin_key: trellis_types::PublicKey,
        #[command(flatten)]
        open: ProposalLifetime,
    },
    /// Replace an organisation's roles, or suspend it (no roles: it neither sends nor reads).
    #[command(
        after_help = "Examples:\n  trellis --key admin.pem gov propose set-roles --org supplier-t1 --role supplier --role bank\n  trellis --key admin.pem gov propose set-roles --org supplier-t1 --suspend"
    )]
    SetRoles {
        #[arg(long)]
        org: String,
        /// A role (repeat for more).
        #[arg(long = "role", value_parser = parse_role, required_unless_present = "suspend")]
        roles: Vec<Role>,
        /// Take every role away.
        #[arg(long, conflicts_with = "roles")]
        suspend: bool,
        #[command(flatten)]
        open: ProposalLifetime,
    },
    /// Replace a contract's code; its address and state stay.
    #[command(
        after_help = "Examples:\n  trellis --key admin.pem gov propose upgrade-contract --contract <address> --wasm receivables.wasm"
    )]
    UpgradeContract {
        /// The contract's address (hex).
        #[arg(long)]
        contract: trellis_types::Address,
        /// The new WASM module.
        #[arg(long)]
        wasm: PathBuf,
        #[command(flatten)]
        open: ProposalLifetime,
    },
    /// Give an organisation an account key: a new admin key for a member that lost or had stolen its own.
    #[command(
        after_help = "Examples:\n  trellis --key admin.pem gov propose add-account --org supplier-t1 --key-to-add <hex> --org-admin"
    )]
    AddAccount {
        #[arg(long)]
        org: String,
        /// The account key (hex).
        #[arg(long)]
        key_to_add: trellis_types::PublicKey,
        /// Make it an admin of the organisation (it may add and remove keys).
        #[arg(long)]
        org_admin: bool,
        #[command(flatten)]
        open: ProposalLifetime,
    },
    /// Revoke any organisation's account key (a compromised one).
    #[command(
        after_help = "Examples:\n  trellis --key admin.pem gov propose remove-account --key-to-remove <hex> --lifetime 1d"
    )]
    RemoveAccount {
        /// The account key (hex).
        #[arg(long)]
        key_to_remove: trellis_types::PublicKey,
        #[command(flatten)]
        open: ProposalLifetime,
    },
}

#[derive(Args, Debug)]
pub struct ProposalLifetime {
    /// How long the proposal stays open for approvals (at most 30d).
    #[arg(long, default_value = "7d", value_parser = parse_duration_arg)]
    pub lifetime: Duration,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::ALL
        .into_iter()
        .find(|r| r.as_str() == s.replace('-', "_"))
        .ok_or_else(|| {
            let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
            format!("`{s}` is not a role: {}", names.join(", "))
        })
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Generate a new key and write it to a new file (never overwrites).
    #[command(
        after_help = "Examples:\n  trellis keys new --out ops.pem\n  TRELLIS_NEW_KEY_PASSWORD=… trellis keys new --out ops.pem --encrypt"
    )]
    New {
        /// The file to create (mode 0600).
        #[arg(long, short, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        encryption: Encryption,
    },
    /// Print a key's public key (hex, the account id) and its PEM public key.
    #[command(
        after_help = "Examples:\n  trellis keys show ops.pem\n  trellis --key ops.pem keys show\n  trellis --dev-account supplier-t1/ops keys show\n  trellis --output json keys show ops.pem | jq -r .public_key"
    )]
    Show {
        /// The key file (default: --key, or the --dev-account key).
        file: Option<PathBuf>,
    },
    /// Organisation admin: register an account key for your organisation, so it can sign.
    #[command(
        after_help = "Examples:\n  trellis --key admin.pem keys add 7e2f6a12c7421c55dab78cc299e72e49d21d9086af98e13347b1c7c59ac31dc1\n  trellis --dev-account supplier-t1/ops keys add \"$(trellis --output json keys show new.pem | jq -r .public_key)\""
    )]
    Add {
        /// The account key (hex), as `trellis keys show` prints it.
        public_key: trellis_types::PublicKey,
        /// Make it an admin of the organisation too (it may add and remove keys).
        #[arg(long)]
        org_admin: bool,
    },
    /// Organisation admin: remove an account key of your organisation.
    #[command(
        after_help = "Examples:\n  trellis --key admin.pem keys remove 7e2f6a12c7421c55dab78cc299e72e49d21d9086af98e13347b1c7c59ac31dc1"
    )]
    Remove {
        /// The account key (hex).
        public_key: trellis_types::PublicKey,
    },
    /// Check a key made elsewhere (openssl, an HSM export) and write it as a Trellis key file.
    #[command(
        after_help = "Examples:\n  openssl genpkey -algorithm ed25519 -out in.pem\n  trellis keys import in.pem --out ops.pem\n  trellis keys import in.der --out ops.pem --encrypt      # DER works too\n  trellis --password-file old.txt keys import locked.pem --out ops.pem"
    )]
    Import {
        /// The key to import: PKCS#8 PEM (encrypted or not) or DER. Its password: --password-file or TRELLIS_KEY_PASSWORD.
        input: PathBuf,
        /// The file to create (mode 0600).
        #[arg(long, short, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        encryption: Encryption,
    },
}

#[derive(Args, Debug, Clone)]
pub struct Encryption {
    /// Protect the new file with a password (PBES2, scrypt + AES-256-CBC; openssl reads it).
    #[arg(long)]
    pub encrypt: bool,
    /// Read the new file's password from FILE (first line); or set TRELLIS_NEW_KEY_PASSWORD.
    #[arg(long, value_name = "FILE", requires = "encrypt")]
    pub new_password_file: Option<PathBuf>,
}

const RECEIVABLE_EXAMPLES: &str = "\
Examples (dev chain; use --key FILE with your own account):
  trellis --dev-account core-acme/ops rcv issue --to supplier-t1 --amount '1,000,000.00 CNY' \\
      --maturity 2026-12-31 --invoice INV-001 --terms 'net 180'
  trellis --dev-account supplier-t1/ops rcv accept 1
  trellis --dev-account supplier-t1/ops rcv split 1 --part supplier-t2=400,000.00
  trellis --dev-account supplier-t3/ops rcv finance request 5 --bank bank-first --rate 3.5%
  trellis --dev-account bank-first/ops rcv finance accept 5 --payment-ref BANK-PAY-1
  trellis --dev-account core-acme/ops rcv settle 1 --payment-ref ACME-PAY-1
  trellis rcv lineage 5
  trellis rcv holdings supplier-t2";

#[derive(Subcommand, Debug)]
pub enum ReceivableCommand {
    /// Issue a receivable against an invoice (core enterprise).
    #[command(
        after_help = "Examples:\n  trellis --dev-account core-acme/ops receivable issue --to supplier-t1 \\\n      --amount '1,000,000.00 CNY' --maturity +90d --invoice INV-001\n  trellis --key acme.pem receivable issue --to supplier-t1 --amount 250000 --currency USD \\\n      --maturity 2026-09-30T00:00:00Z --invoice-file invoices/INV-7.pdf --terms 'net 90'"
    )]
    Issue(IssueArgs),

    /// Accept a receivable issued to you (first holder), within the acceptance window.
    #[command(
        after_help = "Examples:\n  trellis --dev-account supplier-t1/ops receivable accept 1"
    )]
    Accept {
        /// The root piece's id.
        piece: u64,
    },

    /// Reject a receivable issued to you; it returns to its issuer.
    #[command(
        after_help = "Examples:\n  trellis --dev-account supplier-t1/ops receivable reject 1"
    )]
    Reject {
        /// The root piece's id.
        piece: u64,
    },

    /// Move a whole piece you hold to another organisation.
    #[command(
        after_help = "Examples:\n  trellis --dev-account supplier-t1/ops receivable transfer 3 --to supplier-t2"
    )]
    Transfer {
        /// The piece's id.
        piece: u64,
        /// The organisation that receives it.
        #[arg(long, value_name = "ORG")]
        to: String,
    },

    /// Split a piece you hold: parts go to others, the remainder stays with you.
    #[command(
        after_help = "Examples:\n  trellis --dev-account supplier-t1/ops receivable split 1 --part supplier-t2=400,000.00\n  trellis --dev-account supplier-t2/ops receivable split 2 --part supplier-t3=100000 --part supplier-t3=50000"
    )]
    Split {
        /// The piece's id.
        piece: u64,
        /// ORG=AMOUNT, in the piece's currency; repeat for several parts.
        #[arg(long = "part", value_name = "ORG=AMOUNT", required = true)]
        parts: Vec<String>,
    },

    /// Financing: a holder asks a bank, a bank offers, the other side accepts; or cancel.
    #[command(subcommand, after_help = FINANCE_EXAMPLES)]
    Finance(FinanceCommand),

    /// Pay at maturity (issuer): every live piece of a receivable, or one piece.
    #[command(
        after_help = "Examples:\n  trellis --dev-account core-acme/ops receivable settle 1 --payment-ref ACME-2026-001\n  trellis --dev-account core-acme/ops receivable settle --piece 5 --payment-ref ACME-2026-002"
    )]
    Settle {
        /// The receivable (root piece id) to settle whole.
        #[arg(required_unless_present = "piece", conflicts_with = "piece")]
        root: Option<u64>,
        /// Settle only this piece.
        #[arg(long, value_name = "PIECE")]
        piece: Option<u64>,
        /// Your payment's reference, recorded on chain.
        #[arg(long, value_name = "REF")]
        payment_ref: String,
    },

    /// A piece: holder, amount, maturity, status, financing, settlement.
    #[command(
        after_help = "Examples:\n  trellis receivable show 5\n  trellis --output json receivable show 5\n  trellis --genesis genesis.json receivable show 5 --verify"
    )]
    Show {
        /// The piece's id.
        piece: u64,
        /// Check the piece's record against the state root of a block the
        /// validators committed (a Merkle proof and the block's precommits),
        /// trusting the validators of --genesis, else the node's list.
        #[arg(long)]
        verify: bool,
    },

    /// A piece's ancestry back to the original receivable and its issuer.
    #[command(after_help = "Examples:\n  trellis receivable lineage 5")]
    Lineage {
        /// The piece's id.
        piece: u64,
    },

    /// Every piece of a receivable, as a tree.
    #[command(after_help = "Examples:\n  trellis receivable tree 1")]
    Tree {
        /// The receivable (root piece id); any piece id of it works too.
        root: u64,
    },

    /// The pieces an organisation holds (default: the signer's organisation).
    #[command(
        after_help = "Examples:\n  trellis receivable holdings supplier-t2\n  trellis --key ops.pem receivable holdings"
    )]
    Holdings {
        /// The organisation id.
        org: Option<String>,
    },

    /// Freeze a piece (consortium admin): it cannot move, be financed or settled.
    #[command(
        after_help = "Examples:\n  trellis --dev-account consortium/ops receivable freeze 5 --reason 'court order 42'"
    )]
    Freeze {
        /// The piece's id.
        piece: u64,
        /// Why, recorded on chain.
        #[arg(long)]
        reason: String,
    },

    /// Lift a freeze (consortium admin).
    #[command(
        after_help = "Examples:\n  trellis --dev-account consortium/ops receivable unfreeze 5"
    )]
    Unfreeze {
        /// The piece's id.
        piece: u64,
    },
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("document").required(true).args(["invoice", "invoice_file", "invoice_hash"])))]
pub struct IssueArgs {
    /// The supplier it is issued to.
    #[arg(long, value_name = "ORG")]
    pub to: String,
    /// Face value: `1,000,000.00`, `1000000.5`, optionally with the currency (`1,000,000.00 CNY`).
    #[arg(long, value_name = "AMOUNT")]
    pub amount: String,
    /// Currency code (CNY, USD, EUR, JPY, ...), unless written after the amount.
    #[arg(long, value_name = "CODE")]
    pub currency: Option<String>,
    /// When it falls due: RFC 3339, a date (midnight UTC) or +DURATION (+90d).
    #[arg(long, value_name = "WHEN")]
    pub maturity: String,
    /// The invoice number (or any text identifying the document); its blake3 hash goes on chain.
    #[arg(long, value_name = "TEXT")]
    pub invoice: Option<String>,
    /// Hash this file (the invoice or purchase order) instead.
    #[arg(long, value_name = "FILE")]
    pub invoice_file: Option<PathBuf>,
    /// Give the document's 32-byte hash (hex) directly.
    #[arg(long, value_name = "HEX")]
    pub invoice_hash: Option<String>,
    /// Payment terms, free text recorded with the receivable.
    #[arg(long, default_value = "")]
    pub terms: String,
}

const FINANCE_EXAMPLES: &str = "\
A holder asks a bank (request) and the bank accepts; or a bank offers and the holder
accepts. Terms are an annual discount rate (--rate 3.5%: the contract computes the
price, actual/365, whole days rounded up) or a fixed --price. An open offer blocks
moves of the piece until it is accepted, cancelled or expires.

Examples:
  trellis --dev-account supplier-t3/ops receivable finance request 5 --bank bank-first --rate 3.5%
  trellis --dev-account bank-first/ops receivable finance accept 5 --payment-ref BANK-PAY-1
  trellis --dev-account bank-first/ops receivable finance offer 5 --price 149,000.00 --expires +2d
  trellis --dev-account supplier-t3/ops receivable finance accept 5 --payment-ref n/a --price 149,000.00
  trellis --dev-account supplier-t3/ops receivable finance cancel 5";

#[derive(Subcommand, Debug)]
pub enum FinanceCommand {
    /// Holder: ask a bank to finance a piece you hold.
    #[command(
        after_help = "Examples:\n  trellis --dev-account supplier-t3/ops receivable finance request 5 --bank bank-first --rate 3.5%\n  trellis --key t3.pem receivable finance request 5 --bank bank-first --price 149,000.00 --expires +3d"
    )]
    Request {
        /// The piece's id.
        piece: u64,
        /// The bank asked.
        #[arg(long, value_name = "ORG")]
        bank: String,
        #[command(flatten)]
        terms: TermsArgs,
    },
    /// Bank: offer to finance a piece.
    #[command(
        after_help = "Examples:\n  trellis --dev-account bank-first/ops receivable finance offer 5 --rate 4%"
    )]
    Offer {
        /// The piece's id.
        piece: u64,
        #[command(flatten)]
        terms: TermsArgs,
    },
    /// The other side accepts the open offer (a bank accepts a request and funds;
    /// a holder accepts a bank's offer). Give --rate or --price to insist on the terms you expect.
    #[command(
        after_help = "Examples:\n  trellis --dev-account bank-first/ops receivable finance accept 5 --payment-ref BANK-PAY-1\n  trellis --dev-account supplier-t3/ops receivable finance accept 5 --payment-ref T3-1 --rate 4%"
    )]
    Accept {
        /// The piece's id.
        piece: u64,
        /// The bank's payment reference for the purchase price.
        #[arg(long, value_name = "REF")]
        payment_ref: String,
        /// Refuse unless the open offer's rate is this.
        #[arg(long, value_name = "PERCENT", conflicts_with = "price")]
        rate: Option<String>,
        /// Refuse unless the open offer's price is this.
        #[arg(long, value_name = "AMOUNT")]
        price: Option<String>,
        /// Refuse unless the open offer is this bank's (the holder accepting
        /// a bank's offer names the bank it chose).
        #[arg(long, value_name = "ORG")]
        bank: Option<String>,
    },
    /// Withdraw your offer or request, or decline the other side's.
    #[command(
        after_help = "Examples:\n  trellis --dev-account supplier-t3/ops receivable finance cancel 5"
    )]
    Cancel {
        /// The piece's id.
        piece: u64,
    },
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("terms").required(true).args(["rate", "price"])))]
pub struct TermsArgs {
    /// Annual discount rate: 3.5%, 3.5 or 350bps.
    #[arg(long, value_name = "PERCENT")]
    pub rate: Option<String>,
    /// Fixed purchase price, in the piece's currency.
    #[arg(long, value_name = "AMOUNT")]
    pub price: Option<String>,
    /// Until when the offer can be accepted (default: 7 days, or just before maturity if sooner).
    #[arg(long, value_name = "WHEN")]
    pub expires: Option<String>,
}

const EVENTS_EXAMPLES: &str = "\
Without --follow: the matching transactions from --from up to the current head, then exit
(a table, or one JSON array). With --follow: keeps streaming, resuming after dropped
connections with no gap and no duplicate; with --output json it prints one JSON object per
line (JSON Lines), the one exception to \"one JSON document\".

Examples:
  trellis events --from 1
  trellis events --from 1 --follow --kind issued,split --party supplier-t2
  trellis --output json events --follow --after 42:0 >> events.jsonl";

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// First block height to read (default: 1, or the next block with --follow).
    #[arg(long, value_name = "HEIGHT", conflicts_with = "after")]
    pub from: Option<u64>,
    /// Continue strictly after this position HEIGHT:INDEX (as printed), e.g. to resume.
    #[arg(long, value_name = "POSITION")]
    pub after: Option<trellis_sdk::api::TxPosition>,
    /// Keep following new commits until interrupted.
    #[arg(long, short)]
    pub follow: bool,
    /// Only transactions with an event of this kind (issued, accepted, split, financed, settled, ...).
    #[arg(long, value_name = "KIND", value_delimiter = ',')]
    pub kind: Vec<String>,
    /// Only transactions concerning this organisation id or account key (hex).
    #[arg(long, value_name = "PARTY", value_delimiter = ',')]
    pub party: Vec<String>,
}

const DEMO_EXAMPLES: &str = "\
The story: core-acme issues 1,000,000.00 CNY to supplier-t1 against invoice INV-001;
supplier-t1 accepts and splits 400,000.00 to supplier-t2; supplier-t2 splits 150,000.00
to supplier-t3; supplier-t3 has bank-first finance its piece at a 3.5 % annual discount;
a second issue against the same invoice is refused; at maturity core-acme settles, and
the demo shows who was paid what and every piece's lineage. It signs with the public,
INSECURE dev keys, so it needs a dev or local chain. Each run uses a fresh invoice
number (INV-001-<run>), so it can run many times on one chain.

Examples:
  trellis demo                                   # node at 127.0.0.1:8080, or starts trellis-node --dev
  trellis demo --no-start                        # never start a node
  trellis --node http://127.0.0.1:8080,http://127.0.0.1:8081 demo   # a local network
  trellis --output json demo | jq .payouts";

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Never start a node: fail if none answers.
    #[arg(long, conflicts_with = "start")]
    pub no_start: bool,
    /// Always start a fresh `trellis-node --dev` on a free port (data in a temporary directory).
    #[arg(long)]
    pub start: bool,
    /// The trellis-node binary to start (default: next to this program, then PATH).
    #[arg(long, env = "TRELLIS_NODE_BIN", value_name = "FILE")]
    pub node_bin: Option<PathBuf>,
    /// How long after issue the receivable matures (must exceed the chain's acceptance window).
    #[arg(long, default_value = "25s", value_name = "DURATION", value_parser = parse_duration_arg)]
    pub maturity_in: Duration,
    /// The invoice number; a run suffix is added so runs do not collide.
    #[arg(long, default_value = "INV-001", value_name = "TEXT")]
    pub invoice: String,
}

const BENCH_EXAMPLES: &str = "\
Signs with the dev accounts' public keys (it adds accounts of its own to each organisation,
and raises core-acme's credit limit when it needs to), so it needs a dev or local chain.
Exit code 9 when committed operations per second fall below --min-ops (--quick has a default).

Examples:
  trellis bench --start                                  # starts trellis-node --dev, 60 s at max rate
  trellis bench --rate 2000 --duration 30s               # the node at 127.0.0.1:8080
  trellis bench --mix remark                             # the floor: remarks only
  trellis bench --quick --start                          # CI: a few seconds, fails on a gross regression
  trellis bench --start --validators 4 --rate max        # a four-validator local network it starts
  trellis bench --start --validators 4 --indexes first   # validators 1-3 keep no indexes
  trellis --node http://127.0.0.1:8080,http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083 \\
      bench --rate 1500 --node-pid 4101 --node-pid 4102 --node-pid 4103 --node-pid 4104
  trellis --output json bench --quick | jq .ops_per_s";

/// Which of the nodes `--start` starts keep the transaction and query indexes.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchIndexes {
    /// Every node (the nodes' default).
    All,
    /// The first node only; the others run as validators that serve no queries.
    First,
    /// No node.
    None,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchMix {
    /// 5 % issue, 40 % transfer, 40 % split, 10 % financing, 5 % settle (of transactions).
    Receivables,
    /// `remark` system operations only: the chain's floor cost per transaction.
    Remark,
}

/// A target rate: transactions per second, or as fast as the window allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BenchRate {
    PerSecond(f64),
    Max,
}

fn parse_bench_rate(s: &str) -> Result<BenchRate, String> {
    if s.trim().eq_ignore_ascii_case("max") {
        return Ok(BenchRate::Max);
    }
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1e7 => Ok(BenchRate::PerSecond(r)),
        _ => Err(format!(
            "`{s}` is not a rate: give transactions per second (e.g. 2000) or `max`"
        )),
    }
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to send.
    #[arg(long, value_enum, default_value_t = BenchMix::Receivables)]
    pub mix: BenchMix,
    /// Transactions per second offered on a fixed schedule (open loop), or `max`:
    /// as fast as the in-flight window allows [default: max; 500 with --quick].
    #[arg(long, value_name = "N|max", value_parser = parse_bench_rate)]
    pub rate: Option<BenchRate>,
    /// How long to offer load, after the setup [default: 60s; 5s with --quick].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    /// Most transactions sent and not yet seen committed [default: 4000; 2000 with --quick].
    #[arg(long, value_name = "N")]
    pub window: Option<u64>,
    /// Most transactions per submission request: what is due at once goes to a
    /// node as one `POST /v1/transactions/batch`; 1 sends each on its own to
    /// `POST /v1/transactions`.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch: u16,
    /// How often the submitter sends: what is due (open loop) or what the window
    /// allows (`max`), in requests of up to --batch. At 2,500/s the default sends
    /// about 25 a request; 1ms sends about 3, and the nodes' and this program's
    /// per-request work grows with the count (docs/benchmarks.md). Open-loop latency
    /// counts from when a transaction was due, so this wait is in it.
    #[arg(long, value_name = "DURATION", default_value = "10ms", value_parser = parse_send_every)]
    pub send_every: Duration,
    /// This program's CPU niceness (0 to 19) once the nodes it starts are running: on
    /// shared cores the nodes are served first and the generator takes what they
    /// leave (docs/benchmarks.md). 0 leaves it as it is.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub nice: i32,
    /// CI mode: a few seconds at a small fixed rate; exits 9 below --min-ops.
    #[arg(long)]
    pub quick: bool,
    /// Exit 9 (regression) when committed operations per second fall below this.
    #[arg(long, value_name = "OPS")]
    pub min_ops: Option<f64>,
    /// A node process to report CPU and memory of; repeatable [default: the nodes
    /// --start started, else the processes listening on the loopback --node ports].
    #[arg(long = "node-pid", value_name = "PID")]
    pub node_pids: Vec<u32>,
    /// Start the nodes: `trellis-node --dev`, or with --validators N a local network
    /// of N validators (temporary data; stopped when the bench ends).
    #[arg(long)]
    pub start: bool,
    /// Validators of the network --start starts.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "start")]
    pub validators: usize,
    /// Observers the network --start starts beside its validators: they keep both
    /// indexes, as nodes that serve readers; the load goes to the validators only.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "start")]
    pub observers: usize,
    /// Which validators --start starts keep the transaction and query indexes
    /// (`[index]`, docs/operator.md); --reads needs both on the nodes it reads.
    #[arg(long, value_enum, value_name = "WHICH", default_value_t = BenchIndexes::All, requires = "start")]
    pub indexes: BenchIndexes,
    /// Reads a second sent beside the load (open loop), as banks, suppliers and
    /// regulators ask: an organisation's holdings, a piece's lineage, a transaction
    /// by hash. They go to --read-node, else to the observers --start starts, else
    /// to the load's nodes; the nodes read must keep both indexes [default: 0, none].
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub reads: u32,
    /// Where --reads go instead: a node's API URL; repeatable or comma-separated
    /// (an observer of a network you started, say).
    #[arg(
        long = "read-node",
        value_name = "URL",
        value_delimiter = ',',
        requires = "reads"
    )]
    pub read_nodes: Vec<String>,
    /// The trellis-node binary --start runs (default: next to this program, then PATH).
    #[arg(long, env = "TRELLIS_NODE_BIN", value_name = "FILE")]
    pub node_bin: Option<PathBuf>,
    /// Signing accounts per organisation [default: enough that no account nears the
    /// chain's per-sender mempool limit or nonce gap at the expected rate, nor with
    /// the whole --window in flight].
    #[arg(long, value_name = "N")]
    pub accounts: Option<usize>,
    /// With --rate max: the rate to size accounts, the signature nonces made ahead
    /// and the receivables maturing in the run for [default: accounts for 20000/s;
    /// receivables for the rate the setup reached, nonces for 2.5 times it (at most
    /// 20000/s; with --mix remark, 20000/s)].
    #[arg(long, value_name = "N")]
    pub expect_rate: Option<f64>,
    /// Receivables issued and accepted before the run besides those maturing
    /// in it, to measure on a chain that already holds that many pieces
    /// [default: as many as may be in flight, 1000 to 20000].
    #[arg(long, value_name = "N")]
    pub setup_roots: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_examples_in_its_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            let examples = cmd
                .get_after_help()
                .is_some_and(|h| h.to_string().contains("Examples"));
            if !examples && cmd.get_name() != "help" {
                missing.push(path.clone());
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(
            missing.is_empty(),
            "no examples in the help of: {missing:?}"
        );
    }

    #[test]
    fn global_options_parse_from_anywhere_on_the_line() {
        let cli = Cli::try_parse_from([
            "trellis",
            "receivable",
            "show",
            "5",
            "--node",
            "http://a:1,http://b:2",
            "--output",
            "json",
            "--timeout",
            "2m",
        ])
        .expect("parses");
        assert_eq!(cli.global.nodes, ["http://a:1", "http://b:2"]);
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert_eq!(cli.global.timeout, Duration::from_secs(120));
        assert!(Cli::try_parse_from(["trellis", "--timeout", "soon", "status"]).is_err());
    }
}
