// Over 400 lines because of its tests: unit tests and proptests of the scope algebra.
//! Scopes and their algebra (CONTRACT §2).

use std::fmt;
use std::str::FromStr;

use crate::directory::Role;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Scope {
    IssuesRead,
    IssuesWrite,
    ProjectsRead,
    ProjectsWrite,
    DocumentsRead,
    DocumentsWrite,
    WorkspaceRead,
    WorkspaceAdmin,
    UserRead,
    UserWrite,
    WorkspacesList,
    WorkspacesCreate,
    WorkspacesUpdate,
    WorkspacesDelete,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 15] = [
        Scope::IssuesRead,
        Scope::IssuesWrite,
        Scope::ProjectsRead,
        Scope::ProjectsWrite,
        Scope::DocumentsRead,
        Scope::DocumentsWrite,
        Scope::WorkspaceRead,
        Scope::WorkspaceAdmin,
        Scope::UserRead,
        Scope::UserWrite,
        Scope::WorkspacesList,
        Scope::WorkspacesCreate,
        Scope::WorkspacesUpdate,
        Scope::WorkspacesDelete,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::IssuesRead => "issues:read",
            Scope::IssuesWrite => "issues:write",
            Scope::ProjectsRead => "projects:read",
            Scope::ProjectsWrite => "projects:write",
            Scope::DocumentsRead => "documents:read",
            Scope::DocumentsWrite => "documents:write",
            Scope::WorkspaceRead => "workspace:read",
            Scope::WorkspaceAdmin => "workspace:admin",
            Scope::UserRead => "user:read",
            Scope::UserWrite => "user:write",
            Scope::WorkspacesList => "workspaces:list",
            Scope::WorkspacesCreate => "workspaces:create",
            Scope::WorkspacesUpdate => "workspaces:update",
            Scope::WorkspacesDelete => "workspaces:delete",
            Scope::Admin => "admin",
        }
    }

    /// What the consent page says the scope lets an app do: the one table of
    /// descriptions. Only `issues:write` could be checked against the public
    /// docs ("Create, update, delete issues"); the rest follow its pattern.
    pub fn description(self) -> &'static str {
        match self {
            Scope::IssuesRead => "Read issues",
            Scope::IssuesWrite => "Create, update, delete issues",
            Scope::ProjectsRead => "Read projects",
            Scope::ProjectsWrite => "Create, update, delete projects",
            Scope::DocumentsRead => "Read documents",
            Scope::DocumentsWrite => "Create, update, delete documents",
            Scope::WorkspaceRead => "Read workspace settings and members",
            Scope::WorkspaceAdmin => "Manage workspace settings and members",
            Scope::UserRead => "Read your profile",
            Scope::UserWrite => "Update your profile",
            Scope::WorkspacesList => "List your workspaces",
            Scope::WorkspacesCreate => "Create workspaces",
            Scope::WorkspacesUpdate => "Update your workspaces",
            Scope::WorkspacesDelete => "Delete your workspaces",
            Scope::Admin => "Manage your account and all your workspaces",
        }
    }

    pub(crate) fn is_workspace(self) -> bool {
        (self as u8) <= Scope::WorkspaceAdmin as u8
    }

    pub(crate) fn is_personal(self) -> bool {
        !self.is_workspace()
    }

    /// Read scopes: the `:read` ones, plus `workspaces:list`, which only reads.
    pub(crate) fn is_read(self) -> bool {
        matches!(
            self,
            Scope::IssuesRead
                | Scope::ProjectsRead
                | Scope::DocumentsRead
                | Scope::WorkspaceRead
                | Scope::UserRead
                | Scope::WorkspacesList
        )
    }

    fn bit(self) -> u16 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope")]
pub struct UnknownScope;

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or(UnknownScope)
    }
}

/// A set of scopes, as a bit set: cheap to copy, compare and store.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet(u16);

impl ScopeSet {
    pub(crate) const EMPTY: ScopeSet = ScopeSet(0);

    pub fn from_bits(bits: u16) -> Option<ScopeSet> {
        let all = Self::all().0;
        (bits & !all == 0).then_some(ScopeSet(bits))
    }

    pub fn bits(self) -> u16 {
        self.0
    }

    pub fn all() -> ScopeSet {
        Scope::ALL.into_iter().collect()
    }

    pub fn workspace() -> ScopeSet {
        Scope::ALL
            .into_iter()
            .filter(|s| s.is_workspace())
            .collect()
    }

    pub fn personal() -> ScopeSet {
        Scope::ALL.into_iter().filter(|s| s.is_personal()).collect()
    }

    /// Parses scope names; an unknown name is an error, not ignored.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<ScopeSet, UnknownScope> {
        names
            .into_iter()
            .map(|name| name.trim().parse::<Scope>())
            .collect()
    }

    /// Parses a space-separated OAuth `scope` parameter.
    pub(crate) fn parse_space_separated(text: &str) -> Result<ScopeSet, UnknownScope> {
        Self::parse(text.split_ascii_whitespace())
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn union(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 | other.0)
    }

    pub(crate) fn intersection(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & other.0)
    }

    pub(crate) fn is_subset(self, other: ScopeSet) -> bool {
        self.0 & !other.0 == 0
    }

    /// The scopes held once implications are applied: `X:write` grants
    /// `X:read`, `workspace:admin` grants `workspace:read`, personal `admin`
    /// grants every personal scope.
    pub(crate) fn effective(self) -> ScopeSet {
        let mut out = self;
        for (grants, granted) in [
            (Scope::IssuesWrite, Scope::IssuesRead),
            (Scope::ProjectsWrite, Scope::ProjectsRead),
            (Scope::DocumentsWrite, Scope::DocumentsRead),
            (Scope::WorkspaceAdmin, Scope::WorkspaceRead),
            (Scope::UserWrite, Scope::UserRead),
        ] {
            if self.contains(grants) {
                out.insert(granted);
            }
        }
        if self.contains(Scope::Admin) {
            out = out.union(Self::personal());
        }
        out
    }

    /// Whether, after implications, this set grants every scope in `needed`.
    pub fn grants(self, needed: ScopeSet) -> bool {
        needed.is_subset(self.effective())
    }

    pub(crate) fn only_workspace(self) -> ScopeSet {
        self.intersection(Self::workspace())
    }

    pub(crate) fn only_personal(self) -> ScopeSet {
        self.intersection(Self::personal())
    }

    pub(crate) fn only_read(self) -> ScopeSet {
        self.iter().filter(|s| s.is_read()).collect()
    }

    /// A read-only set holds only read scopes (and at least one).
    pub(crate) fn is_read_only(self) -> bool {
        !self.is_empty() && self.iter().all(Scope::is_read)
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    pub fn names(self) -> Vec<String> {
        self.iter().map(|s| s.as_str().to_owned()).collect()
    }

    /// Space-separated, as OAuth's `scope` field.
    pub fn to_space_separated(self) -> String {
        self.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ")
    }

    /// The workspace scopes a membership role carries.
    pub(crate) fn of_role(role: Role) -> ScopeSet {
        match role {
            Role::Owner | Role::Admin => Self::workspace(),
            Role::Member => {
                let mut set = Self::workspace();
                set.0 &= !Scope::WorkspaceAdmin.bit();
                set
            }
            Role::Guest => Self::workspace().only_read(),
        }
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<T: IntoIterator<Item = Scope>>(iter: T) -> Self {
        let mut set = ScopeSet::EMPTY;
        for scope in iter {
            set.insert(scope);
        }
        set
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Scope::as_str))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(names: &[&str]) -> ScopeSet {
        ScopeSet::parse(names.iter().copied()).unwrap()
    }

    #[test]
    fn descriptions_follow_the_docs_line_for_issues_write() {
        assert_eq!(
            Scope::IssuesWrite.description(),
            "Create, update, delete issues"
        );
        let mut seen = std::collections::HashSet::new();
        for scope in Scope::ALL {
            let text = scope.description();
            assert!(seen.insert(text), "{text} is used twice");
            assert!(!text.ends_with('.'), "{text}");
            if scope.is_workspace() && scope.as_str().ends_with(":write") {
                assert!(text.starts_with("Create, update, delete "), "{text}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
        }
        assert!("issues:delete".parse::<Scope>().is_err());
        assert!(ScopeSet::parse(["issues:read", "nope"]).is_err());
    }

    #[test]
    fn workspace_and_personal_partition_all() {
        assert_eq!(ScopeSet::workspace().iter().count(), 8);
        assert_eq!(ScopeSet::personal().iter().count(), 7);
        assert_eq!(
            ScopeSet::workspace().union(ScopeSet::personal()),
            ScopeSet::all()
        );
        assert!(
            ScopeSet::workspace()
                .intersection(ScopeSet::personal())
                .is_empty()
        );
    }

    #[test]
    fn write_grants_read() {
        let s = set(&["issues:write"]);
        assert!(s.grants(set(&["issues:read"])));
        assert!(!s.grants(set(&["projects:read"])));
        assert!(!set(&["issues:read"]).grants(set(&["issues:write"])));
        assert!(set(&["user:write"]).grants(set(&["user:read"])));
    }

    #[test]
    fn workspace_admin_grants_workspace_read_only() {
        let s = set(&["workspace:admin"]);
        assert!(s.grants(set(&["workspace:read"])));
        assert!(!s.grants(set(&["issues:read"])));
    }

    #[test]
    fn personal_admin_grants_every_personal_scope_and_no_workspace_scope() {
        let s = set(&["admin"]);
        assert!(s.grants(ScopeSet::personal()));
        assert!(!s.grants(set(&["issues:read"])));
    }

    #[test]
    fn role_scopes() {
        assert_eq!(ScopeSet::of_role(Role::Owner), ScopeSet::workspace());
        assert_eq!(ScopeSet::of_role(Role::Admin), ScopeSet::workspace());
        let member = ScopeSet::of_role(Role::Member);
        assert_eq!(member.iter().count(), 7);
        assert!(!member.contains(Scope::WorkspaceAdmin));
        assert_eq!(
            ScopeSet::of_role(Role::Guest),
            set(&[
                "issues:read",
                "projects:read",
                "documents:read",
                "workspace:read"
            ])
        );
    }

    #[test]
    fn read_only() {
        assert!(set(&["issues:read", "workspace:read"]).is_read_only());
        assert!(set(&["user:read", "workspaces:list"]).is_read_only());
        assert!(!set(&["issues:read", "issues:write"]).is_read_only());
        assert!(!ScopeSet::EMPTY.is_read_only());
    }

    #[test]
    fn bits_round_trip_and_reject_unknown_bits() {
        let s = set(&["issues:write", "admin"]);
        assert_eq!(ScopeSet::from_bits(s.bits()), Some(s));
        assert_eq!(ScopeSet::from_bits(1 << 15), None);
    }

    fn any_set() -> impl Strategy<Value = ScopeSet> {
        (0u16..(1 << 15)).prop_map(|bits| ScopeSet::from_bits(bits).unwrap())
    }

    proptest! {
        #[test]
        fn effective_is_a_closure(s in any_set()) {
            prop_assert!(s.is_subset(s.effective()));
            prop_assert_eq!(s.effective().effective(), s.effective());
        }

        #[test]
        fn effective_is_monotone(a in any_set(), b in any_set()) {
            if a.is_subset(b) {
                prop_assert!(a.effective().is_subset(b.effective()));
            }
        }

        #[test]
        fn effective_never_crosses_kinds(s in any_set()) {
            prop_assert_eq!(s.only_workspace().effective().only_personal(), ScopeSet::EMPTY);
            prop_assert_eq!(s.only_personal().effective().only_workspace(), ScopeSet::EMPTY);
        }

        #[test]
        fn space_separated_round_trips(s in any_set()) {
            prop_assert_eq!(ScopeSet::parse_space_separated(&s.to_space_separated()), Ok(s));
        }
    }
}
