# Export survival's `lung` data set (NCCTG advanced lung cancer trial; Loprinzi et al. 1994)
# to data/lung.csv, with the institution code `inst` that defines the clusters of
# r/cox_cluster_strata.R. Values are written unchanged (status stays R's coding,
# 1 = censored, 2 = dead; NA stays empty); only the column names are changed, dots to
# underscores (ph.ecog -> ph_ecog, ...), so that Python formulas can name them.
source("r/common.R")
suppressPackageStartupMessages(library(survival))

lung_out <- survival::lung
names(lung_out) <- gsub(".", "_", names(lung_out), fixed = TRUE)
write.csv(lung_out, "data/lung.csv", row.names = FALSE, na = "")
back <- read.csv("data/lung.csv")
stopifnot(identical(names(back), names(lung_out)), nrow(back) == nrow(lung_out))
for (v in names(lung_out)) stopifnot(isTRUE(all.equal(back[[v]], lung_out[[v]], tolerance = 0)))
cat("wrote data/lung.csv:", nrow(back), "rows (round-trip exact), survival",
    as.character(packageVersion("survival")), "\n")
