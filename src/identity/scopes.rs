//! Which claims each scope releases.
//!
//! This table is the data-minimisation rule: a route may only forward a claim that one of its scopes
//! releases, so an upstream never receives more than what its route asked the federation for.
//! It covers standard OIDC scopes and those of ProConnect and NC Connect; claim names are the normalised
//! vocabulary of [`super::normalise`].

/// Claims released by `scope`. A scope unknown to the table releases the claim of the same name, which is
/// how ProConnect's one-claim scopes and most custom scopes behave.
pub fn claims_released_by(scope: &str) -> Vec<&str> {
    let known: &[&str] = match scope {
        "openid" => &["sub", "acr", "amr", "auth_time", "provider"],
        "profile" => &[
            "name",
            "family_name",
            "given_name",
            "middle_name",
            "nickname",
            "preferred_username",
            "profile",
            "picture",
            "website",
            "gender",
            "birthdate",
            "zoneinfo",
            "locale",
            "updated_at",
            "verified",
            "first_name",
            // NC Connect v2's login name.
            "login",
        ],
        "email" => &["email", "email_verified"],
        "address" => &["address"],
        "phone" => &["phone_number", "phone_number_verified"],
        "usual_name" => &["usual_name", "family_name"],
        "chorusdt" => &["chorusdt_matricule", "chorusdt_societe"],
        "birth" => &["birthplace", "birthcountry"],
        "identite_pivot" => &[
            "given_name",
            "family_name",
            "first_name",
            "preferred_username",
            "birthdate",
            "gender",
            "verified",
            "birthplace",
            "birthcountry",
        ],
        _ => return vec![scope],
    };
    known.to_vec()
}

/// The scopes of the table above: every other scope releases the claim of its own name.
const TABLE_SCOPES: &[&str] = &[
    "openid",
    "profile",
    "email",
    "address",
    "phone",
    "usual_name",
    "chorusdt",
    "birth",
    "identite_pivot",
];

/// ProConnect's one-claim scopes.
const ONE_CLAIM_SCOPES: &[&str] = &[
    "uid",
    "siret",
    "siren",
    "idp_id",
    "organization_label",
    "organizational_unit",
    "belonging_population",
    "idp_acr",
    "roles",
    "custom",
];

/// Every claim name Passerelle knows from a federation or OpenID Connect itself: a name outside them is a
/// typo, or a custom claim (released by a scope of the same name).
fn known_claims() -> impl Iterator<Item = &'static str> {
    TABLE_SCOPES
        .iter()
        .flat_map(|s| claims_released_by(s))
        .chain(ONE_CLAIM_SCOPES.iter().copied())
}

pub fn is_known_claim(claim: &str) -> bool {
    known_claims().any(|k| k == claim)
}

/// The known claim nearest to a misspelt one, if one is near enough to be meant.
pub fn nearest_claim(claim: &str) -> Option<&'static str> {
    known_claims()
        .map(|k| (strsim::damerau_levenshtein(claim, k), k))
        .filter(|(d, k)| *d <= 2 && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// True when one of `scopes` (plus the implicit `openid`) releases `claim`.
pub fn is_released<'a>(claim: &str, scopes: impl IntoIterator<Item = &'a str>) -> bool {
    std::iter::once("openid")
        .chain(scopes)
        .any(|scope| claims_released_by(scope).contains(&claim))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_claim_finds_its_name() {
        assert_eq!(nearest_claim("sirett"), Some("siret"));
        assert_eq!(nearest_claim("emial"), Some("email"));
        assert_eq!(nearest_claim("numero_fiscal"), None);
        assert!(is_released("login", ["profile"]));
    }

    #[test]
    fn openid_releases_only_the_subject_and_authentication_facts() {
        assert!(is_released("sub", []));
        assert!(!is_released("email", []));
        assert!(is_released("email", ["email"]));
        assert!(!is_released("siret", ["email"]));
    }

    #[test]
    fn federation_scopes_release_their_claims() {
        assert!(is_released("family_name", ["usual_name"]));
        assert!(is_released("siret", ["siret"]));
        assert!(is_released("birthplace", ["birth"]));
        assert!(is_released("chorusdt_matricule", ["chorusdt"]));
        assert!(!is_released("birthplace", ["profile"]));
    }
}
