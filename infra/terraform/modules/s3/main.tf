# Buckets for the raw reading archive (Parquet, replay beyond Kafka retention) and model
# artefacts (LSTM checkpoints). Private, versioned, KMS-encrypted, TLS-only, with lifecycle
# rules, and access logs in a separate bucket.
resource "aws_s3_bucket" "access_logs" {
  bucket_prefix = "${var.name}-s3-access-logs-"
  tags          = var.tags
}

resource "aws_s3_bucket" "this" {
  for_each      = var.buckets
  bucket_prefix = "${var.name}-${each.key}-"
  tags          = merge(var.tags, { purpose = each.key })
}

# Every companion resource is written out for the data buckets (keyed like var.buckets) and
# for the access-log bucket, so each bucket visibly carries each protection.
resource "aws_s3_bucket_public_access_block" "this" {
  for_each                = var.buckets
  bucket                  = aws_s3_bucket.this[each.key].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_public_access_block" "access_logs" {
  bucket                  = aws_s3_bucket.access_logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = var.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_ownership_controls" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = var.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_versioning" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = var.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

locals {
  bucket_arns = merge(
    { for k, b in aws_s3_bucket.this : k => b.arn },
    { access-logs = aws_s3_bucket.access_logs.arn },
  )
  bucket_ids = merge(
    { for k, b in aws_s3_bucket.this : k => b.id },
    { access-logs = aws_s3_bucket.access_logs.id },
  )
}

data "aws_iam_policy_document" "tls_only" {
  for_each = toset(concat(keys(var.buckets), ["access-logs"]))
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      local.bucket_arns[each.key],
      "${local.bucket_arns[each.key]}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  for_each   = toset(concat(keys(var.buckets), ["access-logs"]))
  bucket     = local.bucket_ids[each.key]
  policy     = data.aws_iam_policy_document.tls_only[each.key].json
  depends_on = [aws_s3_bucket_public_access_block.this, aws_s3_bucket_public_access_block.access_logs]
}

resource "aws_s3_bucket_logging" "this" {
  for_each      = var.buckets
  bucket        = aws_s3_bucket.this[each.key].id
  target_bucket = aws_s3_bucket.access_logs.id
  target_prefix = "${each.key}/"
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  for_each = var.buckets
  bucket   = aws_s3_bucket.this[each.key].id

  rule {
    id     = "tiering-and-expiry"
    status = "Enabled"
    filter {}

    dynamic "transition" {
      for_each = each.value.infrequent_access_after_days > 0 ? [1] : []
      content {
        days          = each.value.infrequent_access_after_days
        storage_class = "STANDARD_IA"
      }
    }

    dynamic "transition" {
      for_each = each.value.glacier_after_days > 0 ? [1] : []
      content {
        days          = each.value.glacier_after_days
        storage_class = "GLACIER_IR"
      }
    }

    dynamic "expiration" {
      for_each = each.value.expire_after_days > 0 ? [1] : []
      content {
        days = each.value.expire_after_days
      }
    }

    noncurrent_version_expiration {
      noncurrent_days = each.value.noncurrent_expire_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    id     = "expire-access-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = 365
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}
