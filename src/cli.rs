//! `velocity-auth` subcommands: bootstrap and manage the directory and keys
//! straight on the database, with no server or admin token needed.
//! Secrets and ids go to stdout (for `$(…)`), everything else to stderr.

use std::sync::Arc;

use clap::{Args, Subcommand};
use velocity_domain::api_key::KeyOwner;
use velocity_domain::oauth::{ClientId, ClientType};
use velocity_domain::page::{MAX_PAGE_SIZE, Page, PageRequest};
use velocity_domain::service::{AppManager, KeySpec, NewApp};
use velocity_domain::{ApiKey, ApiKeyId, ScopeSet, Service, ServiceConfig, SystemClock, UserId};

use crate::config::DatabaseArgs;

#[derive(Subcommand, Clone, Debug)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    #[command(flatten)]
    Admin(AdminCommand),
}

/// The subcommands that work on the database directly, with no server.
#[derive(Subcommand, Clone, Debug)]
pub enum AdminCommand {
    /// Users mirrored from the main app.
    #[command(subcommand)]
    User(UserCommand),
    /// Workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Workspace memberships and roles.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Workspace (`vel_`) and personal (`velu_`) API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Third-party OAuth apps.
    #[command(subcommand)]
    App(AppCommand),
}

#[derive(Subcommand, Clone, Debug)]
pub enum AppCommand {
    /// Register an app; prints its client_id, then its `vels_` secret,
    /// shown only this once.
    Register {
        #[arg(long)]
        name: String,
        /// The workspace that owns it (its owners and admins manage it);
        /// without it, an app of the operator's.
        #[arg(long)]
        workspace: Option<String>,
        /// Exact redirect URI; repeat for several.
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        /// Comma-separated scopes the app may request.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// A server-side app that must send its secret (default: public,
        /// client_id and PKCE suffice).
        #[arg(long)]
        confidential: bool,
    },
    /// List registered apps (of one workspace, or every app).
    List {
        #[arg(long)]
        workspace: Option<String>,
    },
    /// Issue a new secret; the old one keeps working for `--overlap`
    /// seconds (default 0: it stops at once).
    RotateSecret {
        client_id: String,
        #[arg(long, default_value_t = 0)]
        overlap: u64,
    },
    /// Delete an app and every code and token issued to it.
    Delete { client_id: String },
}

#[derive(Subcommand, Clone, Debug)]
pub enum UserCommand {
    /// Create a user; prints its id.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "")]
        name: String,
        /// The id the main app uses (its Supabase user id); a UUID if omitted.
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Subcommand, Clone, Debug)]
pub enum WorkspaceCommand {
    /// Create a workspace; prints its id.
    Create {
        #[arg(long)]
        slug: String,
        #[arg(long, default_value = "")]
        name: String,
    },
}

#[derive(Subcommand, Clone, Debug)]
pub enum MemberCommand {
    /// Add a user to a workspace, or change their role.
    Add {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        user: String,
        /// owner, admin, member or guest.
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// Remove a user from a workspace.
    Remove {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        user: String,
    },
    /// List a workspace's members.
    List {
        #[arg(long)]
        workspace: String,
    },
}

#[derive(Args, Clone, Debug)]
#[group(required = true, multiple = false)]
pub struct KeyOwnerArgs {
    /// A workspace key (`vel_`) for this workspace slug.
    #[arg(long)]
    workspace: Option<String>,
    /// A personal key (`velu_`) for this user id.
    #[arg(long)]
    user: Option<String>,
}

#[derive(Subcommand, Clone, Debug)]
pub enum KeyCommand {
    /// Create a key; prints the secret, which is shown only this once.
    Create {
        #[command(flatten)]
        owner: KeyOwnerArgs,
        #[arg(long, default_value = "cli")]
        name: String,
        /// Comma-separated scopes, e.g. issues:read,issues:write.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Expire after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List keys (display form only; secrets are never stored).
    List {
        #[command(flatten)]
        owner: KeyOwnerArgs,
        #[arg(long)]
        include_revoked: bool,
    },
    /// Revoke a key by id.
    Revoke { key_id: String },
}

pub async fn run(command: AdminCommand, database: &DatabaseArgs) -> anyhow::Result<()> {
    let db = database.open().await?;
    let service = Service::new(
        db.store(),
        Arc::new(SystemClock),
        None,
        ServiceConfig::default(),
    );
    let result = execute(command, &service).await;
    db.close().await;
    result
}

async fn execute(command: AdminCommand, service: &Service) -> anyhow::Result<()> {
    match command {
        AdminCommand::User(UserCommand::Create { email, name, id }) => {
            let user = service
                .create_user(id, &email, &name)
                .await
                .map_err(public)?;
            eprintln!("created user {} <{}>", user.name, user.email);
            println!("{}", user.id);
        }
        AdminCommand::Workspace(WorkspaceCommand::Create { slug, name }) => {
            let ws = service
                .create_workspace(&slug, &name)
                .await
                .map_err(public)?;
            eprintln!("created workspace {} ({})", ws.slug, ws.name);
            println!("{}", ws.id);
        }
        AdminCommand::Member(MemberCommand::Add {
            workspace,
            user,
            role,
        }) => {
            let m = service
                .set_membership(&workspace, &UserId(user), &role)
                .await
                .map_err(public)?;
            eprintln!("{} is {} of {}", m.user_id, m.role, m.workspace.slug);
        }
        AdminCommand::Member(MemberCommand::Remove { workspace, user }) => {
            service
                .remove_membership(&workspace, &UserId(user.clone()))
                .await
                .map_err(public)?;
            eprintln!("removed {user} from {workspace}");
        }
        AdminCommand::Member(MemberCommand::List { workspace }) => {
            print_every_page(
                async |page| service.memberships_of_workspace(&workspace, &page).await,
                |m| format!("{}\t{}", m.user_id, m.role),
            )
            .await?;
        }
        AdminCommand::Key(KeyCommand::Create {
            owner,
            name,
            scopes,
            expires_in_days,
        }) => {
            let scopes = ScopeSet::parse(scopes.iter().map(String::as_str))
                .map_err(|_| anyhow::anyhow!("unknown scope in {scopes:?}"))?;
            let owner = match (owner.workspace, owner.user) {
                (Some(slug), _) => {
                    KeyOwner::Workspace(service.workspace(&slug).await.map_err(public)?.id)
                }
                (None, Some(user)) => {
                    let user = UserId(user);
                    if service.store().user(&user).await?.is_none() {
                        anyhow::bail!("no user {user}");
                    }
                    KeyOwner::User(user)
                }
                (None, None) => anyhow::bail!("give --workspace or --user"),
            };
            let now = service.clock().now();
            let (key, secret) = service
                .issue_key(KeySpec {
                    owner,
                    created_by: None,
                    name,
                    scopes,
                    expires_at: expires_in_days.map(|d| now.plus_secs(i64::from(d) * 86_400)),
                })
                .await
                .map_err(public)?;
            eprintln!(
                "created {} key {} ({}); the secret is shown only now:",
                key.kind(),
                key.id,
                key.display
            );
            println!("{}", secret.expose());
        }
        AdminCommand::Key(KeyCommand::List {
            owner,
            include_revoked,
        }) => {
            let owner = match (owner.workspace, owner.user) {
                (Some(slug), _) => {
                    KeyOwner::Workspace(service.workspace(&slug).await.map_err(public)?.id)
                }
                (None, Some(user)) => KeyOwner::User(UserId(user)),
                (None, None) => anyhow::bail!("give --workspace or --user"),
            };
            print_every_page(
                async |page| {
                    service
                        .list_keys_unchecked(&owner, include_revoked, &page)
                        .await
                },
                key_line,
            )
            .await?;
        }
        AdminCommand::App(AppCommand::Register {
            name,
            workspace,
            redirect_uris,
            scopes,
            confidential,
        }) => {
            let client_type = if confidential {
                ClientType::Confidential
            } else {
                ClientType::Public
            };
            let request = NewApp {
                workspace_slug: workspace,
                name,
                redirect_uris,
                scopes,
                client_type,
            };
            let (app, secret) = service
                .register_app(&AppManager::Operator, request)
                .await
                .map_err(public)?;
            eprintln!("registered {} app {:?}", app.client_type, app.name);
            println!("{}", app.client_id);
            eprintln!("client secret (shown only now):");
            println!("{}", secret.expose());
        }
        AdminCommand::App(AppCommand::List { workspace }) => {
            let workspace = workspace.as_deref();
            print_every_page(
                async |page| {
                    service
                        .list_apps(&AppManager::Operator, workspace, &page)
                        .await
                },
                |app| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}",
                        app.client_id,
                        app.client_type,
                        app.name,
                        app.allowed_scopes.to_space_separated(),
                        app.redirect_uris.join(" ")
                    )
                },
            )
            .await?;
        }
        AdminCommand::App(AppCommand::RotateSecret { client_id, overlap }) => {
            let (secret, _) = service
                .rotate_app_secret(&AppManager::Operator, &ClientId(client_id.clone()), overlap)
                .await
                .map_err(public)?;
            eprintln!("new client secret for {client_id} (shown only now):");
            println!("{}", secret.expose());
        }
        AdminCommand::App(AppCommand::Delete { client_id }) => {
            service
                .delete_app(&AppManager::Operator, &ClientId(client_id.clone()))
                .await
                .map_err(public)?;
            eprintln!("deleted app {client_id}");
        }
        AdminCommand::Key(KeyCommand::Revoke { key_id }) => {
            let at = service
                .revoke_key_unchecked(&ApiKeyId(key_id.clone()))
                .await
                .map_err(public)?;
            eprintln!("revoked {key_id} at {} ms", at.0);
        }
    }
    Ok(())
}

/// Prints a whole listing, one line per item, a page at a time, so a long
/// listing is never cut short and never held in memory at once.
async fn print_every_page<T>(
    mut fetch: impl AsyncFnMut(PageRequest) -> Result<Page<T>, velocity_domain::Error>,
    line: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    let mut page = PageRequest {
        size: MAX_PAGE_SIZE,
        after: None,
    };
    loop {
        let found = fetch(page.clone()).await.map_err(public)?;
        for item in &found.items {
            println!("{}", line(item));
        }
        match found.next {
            Some(next) => page.after = Some(next),
            None => return Ok(()),
        }
    }
}

fn key_line(key: &ApiKey) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}{}",
        key.id,
        key.display,
        key.name,
        key.scopes.to_space_separated(),
        if key.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        },
        key.expires_at
            .map(|t| format!("\texpires {} ms", t.0))
            .unwrap_or_default()
    )
}

fn public(err: velocity_domain::Error) -> anyhow::Error {
    anyhow::anyhow!("{} ({})", err.public_message(), err.reason())
}
