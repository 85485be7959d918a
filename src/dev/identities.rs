//! Test identities of the development provider, modelled on ProConnect's and NC Connect's test accounts
//! (ProConnect's test identity provider "fia1", SIRET of a real public body; NC Connect's verified and
//! declarative citizens). Claims use the federations' own names, so the normalisation is exercised.

use serde_json::{json, Value};

pub struct TestIdentity {
    pub key: &'static str,
    pub label: &'static str,
    pub description: &'static str,
    pub claims: fn() -> Value,
}

pub const IDENTITIES: &[TestIdentity] = &[
    TestIdentity {
        key: "angela",
        label: "Angela Claire Louise DUBOIS",
        description: "Agente publique (profil ProConnect) — SIRET 21340126800130",
        claims: || {
            json!({
                "sub": "d4a3f2b1-7c1e-4c5e-9a55-2c4f4a1e0001",
                "given_name": "Angela Claire Louise",
                "usual_name": "DUBOIS",
                "email": "Angela.Dubois@fia1.fr",
                "uid": "1",
                "siret": "21340126800130",
                "siren": "213401268",
                "idp_id": "fia1v2",
                "organization_label": "Commune de Montpellier",
                "belonging_population": "agent",
                "roles": ["agent_public", "agent_public_territorial"],
                "chorusdt:matricule": "USER_AGC",
                "chorusdt:societe": "CHT",
                "phone_number": "0123456789",
                "custom": {},
            })
        },
    },
    TestIdentity {
        key: "jean-michel",
        label: "Jean-Michel Éric LAFORÊT",
        description: "Agent de l'État (profil ProConnect) — SIRET 13002526500013",
        claims: || {
            json!({
                "sub": "d4a3f2b1-7c1e-4c5e-9a55-2c4f4a1e0002",
                "given_name": "Jean-Michel Éric",
                "usual_name": "LAFORÊT",
                "email": "jean-michel.laforet@numerique.gouv.fr",
                "uid": "jml",
                "siret": "13002526500013",
                "siren": "130025265",
                "idp_id": "fia2v2",
                "organization_label": "Direction interministérielle du numérique",
                "belonging_population": "agent",
                "roles": ["agent_public", "agent_public_etat"],
                "custom": {},
            })
        },
    },
    TestIdentity {
        key: "helene",
        label: "Hélène WAMYTAN",
        description: "Citoyenne à l'identité vérifiée (profil NC Connect) — née à Nouméa",
        claims: || {
            json!({
                "sub": "nc-7f3e9a1b-0001",
                "given_name": "Hélène",
                "first_name": "Hélène",
                "family_name": "WAMYTAN",
                "preferred_username": "hwamytan",
                "email": "helene.wamytan@example.nc",
                "email_verified": true,
                "birthdate": "1987-04-12",
                "birthplace": "Nouméa",
                "birthcountry": "Nouvelle-Calédonie",
                "gender": "female",
                "verified": 2,
            })
        },
    },
    TestIdentity {
        key: "paul",
        label: "Paul Teï NAOUNA",
        description: "Citoyen au compte déclaratif (profil NC Connect) — identité non vérifiée",
        claims: || {
            json!({
                "sub": "nc-7f3e9a1b-0002",
                "given_name": "Paul Teï",
                "first_name": "Paul",
                "family_name": "NAOUNA",
                "preferred_username": "pnaouna",
                "email": "paul.naouna@example.nc",
                "email_verified": false,
                "birthdate": "1992-11-03",
                "gender": "male",
                "verified": 1,
            })
        },
    },
];

pub fn find(key: &str) -> Option<&'static TestIdentity> {
    IDENTITIES.iter().find(|i| i.key == key)
}
