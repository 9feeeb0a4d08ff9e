"""jobs.ray_embedded: whether the job ran on the embedded cluster of its submit

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on every backend: SQLite's batch mode would copy the jobs table, and
    # dropping the old copy cascades into attempts and interruptions.
    op.add_column("jobs", sa.Column("ray_embedded", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("ray_embedded")
