"""Numbers the paper publishes, kept as data so tests and reports can check them."""

from leukemia_mtl import stats

# Table V: ten runs of InceptionResNetV2, classical vs multistage transfer learning (accuracy, %).
# Run 3's classical value is garbled in our copy of the paper; 87.31 is our reading.
TABLE_V_CLASSICAL = (89.17, 90.28, 87.31, 90.12, 89.35, 88.72, 87.39, 92.43, 89.32, 88.85)
TABLE_V_MULTISTAGE = (93.45, 95.23, 92.52, 94.73, 92.38, 93.85, 95.03, 93.73, 94.39, 94.52)
# What the paper claims for them (Sec. III-E): t, p and degrees of freedom (two groups of ten).
CLAIMED_T = 0.85310
CLAIMED_P = 0.0001
CLAIMED_DF = 18
# 10-fold cross-validation: each fold tests on 1/10 and trains on 9/10 of the data.
TABLE_V_TEST_TRAIN_RATIO = 1 / 9
# Its training (Sec. II-E, Table I): 10 folds, 160 epochs per stage, 299 px inputs.
FOLDS = 10
EPOCHS = 160
INPUT_SIZE = 299

# Tables II-III (10-fold cross-validated, multistage): accuracy, precision, recall, F1.
TABLE_II_DETECTION = {
    "InceptionV3": (0.978, 0.985, 0.963, 0.973),
    "Xception": (0.981, 0.986, 0.967, 0.976),
    "InceptionResNetV2": (0.996, 0.996, 0.988, 0.991),
}
TABLE_III_CLASSIFICATION = {
    "InceptionV3": (0.8733, 0.8766, 0.8736, 0.8741),
    "Xception": (0.9000, 0.9024, 0.9000, 0.9005),
    "InceptionResNetV2": (0.9467, 0.9467, 0.9466, 0.9468),
}


def table_v_reanalysis(confidence: float = 0.95) -> dict:
    """The paper's Table V through every test, and whether its claimed (t, p, df) can hold."""
    results = stats.compare(TABLE_V_CLASSICAL, TABLE_V_MULTISTAGE, TABLE_V_TEST_TRAIN_RATIO, confidence)
    return {
        "classical": list(TABLE_V_CLASSICAL),
        "multistage": list(TABLE_V_MULTISTAGE),
        "tests": [r.to_dict() for r in results],
        "claimed": {"t": CLAIMED_T, "p": CLAIMED_P, "df": CLAIMED_DF},
        "p_of_claimed_t": stats.p_from_t(CLAIMED_T, CLAIMED_DF),
        "t_for_claimed_p": stats.t_for_p(CLAIMED_P, CLAIMED_DF),
    }
