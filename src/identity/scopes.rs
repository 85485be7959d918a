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
