"""Column names of the canonical tables (design.md §2), defined once.

Every module names columns through these constants, so a rename is one edit.
"""

from __future__ import annotations

# interactions
USER_ID = "user_id"
ITEM_ID = "item_id"
RATING = "rating"
TIMESTAMP = "timestamp"

# items
TITLE = "title"
YEAR = "year"
GENRES = "genres"

# users, after privacy at the door: raw age and 5-digit zip never reach data/
AGE_BAND = "age_band"
GENDER = "gender"
OCCUPATION = "occupation"
REGION = "region"

# derived by the split stage
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
SPLIT = "split"

INTERACTION_COLUMNS = (USER_ID, ITEM_ID, RATING, TIMESTAMP)
ITEM_COLUMNS = (ITEM_ID, TITLE, YEAR, GENRES)
USER_COLUMNS = (USER_ID, AGE_BAND, GENDER, OCCUPATION, REGION)
PROFILE_COLUMNS = (AGE_BAND, GENDER, OCCUPATION, REGION)
