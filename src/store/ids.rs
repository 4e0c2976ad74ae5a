//! ID pairs: imported, learned, looked up.
//!
//! Must never: pair an ID twice: the first pair wins, on every replica.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{discard_if_failed, Store, StoreError};

impl Store {
    /// Adds ID pairs; pairs whose primary or shadow ID is already paired
    /// are left out (the first pair wins, on every replica). Returns how many were added.
    pub async fn insert_id_pairs(
        &self,
        pairs: &[crate::exchange::IdPair],
        origin: &str,
        at_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut connection = self.pool.acquire().await?;
        let added = async {
            let mut tx = sqlx::Connection::begin(&mut *connection).await?;
            let added = insert_pairs(&mut tx, pairs, origin, at_ms).await?;
            tx.commit().await?;
            Ok(added)
        }
        .await;
        discard_if_failed(connection, added).await
    }

    /// The pair holding `id` on side `known` (the primary's or the shadow's ID).
    pub async fn id_pair_of(
        &self,
        kind: &str,
        id: &str,
        known: crate::exchange::Side,
    ) -> Result<Option<crate::exchange::IdPair>, StoreError> {
        let query = match known {
            crate::exchange::Side::Primary => {
                "SELECT primary_id, shadow_id FROM id_map WHERE kind = $1 AND primary_id = $2"
            }
            crate::exchange::Side::Shadow => {
                "SELECT primary_id, shadow_id FROM id_map WHERE kind = $1 AND shadow_id = $2"
            }
        };
        let row = sqlx::query(query)
            .bind(kind)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(crate::exchange::IdPair {
                kind: kind.to_string(),
                primary_id: row.try_get(0)?,
                shadow_id: row.try_get(1)?,
            })
        })
        .transpose()
    }

    /// ID pairs created at or after a time (other instances' learning).
    pub async fn id_pairs_since(&self, created_ms: i64) -> Result<Vec<(crate::exchange::IdPair, i64)>, StoreError> {
        let rows = sqlx::query("SELECT kind, primary_id, shadow_id, created_ms FROM id_map WHERE created_ms >= $1")
            .bind(created_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(pair_row).collect()
    }

    /// Every ID pair, oldest first.
    pub async fn id_pairs(&self) -> Result<Vec<(crate::exchange::IdPair, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT kind, primary_id, shadow_id, origin FROM id_map ORDER BY created_ms, kind, primary_id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(pair_row).collect()
    }
}

pub(super) async fn insert_pairs(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    pairs: &[crate::exchange::IdPair],
    origin: &str,
    at_ms: i64,
) -> Result<u64, StoreError> {
    let mut added = 0;
    for pair in pairs {
        added += sqlx::query(
            "INSERT INTO id_map (kind, primary_id, shadow_id, origin, created_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&pair.kind)
        .bind(&pair.primary_id)
        .bind(&pair.shadow_id)
        .bind(origin)
        .bind(at_ms)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }
    Ok(added)
}

/// (pair, fourth column) from `kind, primary_id, shadow_id, …`.
fn pair_row<T>(row: &AnyRow) -> Result<(crate::exchange::IdPair, T), StoreError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    Ok((
        crate::exchange::IdPair {
            kind: row.try_get(0)?,
            primary_id: row.try_get(1)?,
            shadow_id: row.try_get(2)?,
        },
        row.try_get(3)?,
    ))
}
