# Timestream for InfluxDB (managed InfluxDB 2.x) with a Multi-AZ standby. The services speak
# the InfluxDB 1.x HTTP API, which InfluxDB 2.x serves through its v1 compatibility API once
# the bucket is mapped to database/retention policy (see docs/decisions/0602-*.md).
data "aws_secretsmanager_random_password" "admin" {
  password_length     = 32
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "admin" {
  name        = "${var.name}/influxdb/admin"
  description = "Administrator of the InfluxDB instance ${var.name}"
  kms_key_id  = var.kms_key_arn
  tags        = var.tags
}

resource "aws_secretsmanager_secret_version" "admin" {
  secret_id = aws_secretsmanager_secret.admin.id
  secret_string = jsonencode({
    username     = var.admin_username
    password     = data.aws_secretsmanager_random_password.admin.random_password
    organization = var.organization
    bucket       = var.bucket
  })

  # The random password data source is re-read on every plan; the stored value wins.
  lifecycle {
    ignore_changes = [secret_string]
  }
}

resource "aws_security_group" "influxdb" {
  name        = "${var.name}-influxdb"
  description = "InfluxDB HTTP API from the application subnets only"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "influxdb" {
  for_each          = toset(var.allowed_cidr_blocks)
  security_group_id = aws_security_group.influxdb.id
  description       = "InfluxDB HTTPS from application subnet ${each.value}"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.port
  to_port           = var.port
}

resource "aws_s3_bucket" "logs" {
  bucket_prefix = "${var.name}-influx-logs-"
  tags          = var.tags
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    id     = "expire-engine-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = 90
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

resource "aws_timestreaminfluxdb_db_instance" "this" {
  name                   = var.name
  db_instance_type       = var.instance_type
  db_storage_type        = var.storage_type
  allocated_storage      = var.allocated_storage_gb
  deployment_type        = "WITH_MULTIAZ_STANDBY"
  publicly_accessible    = false
  port                   = var.port
  vpc_subnet_ids         = var.subnet_ids
  vpc_security_group_ids = [aws_security_group.influxdb.id]

  username     = var.admin_username
  password     = data.aws_secretsmanager_random_password.admin.random_password
  organization = var.organization
  bucket       = var.bucket

  log_delivery_configuration {
    s3_configuration {
      bucket_name = aws_s3_bucket.logs.bucket
      enabled     = true
    }
  }

  tags = var.tags

  lifecycle {
    ignore_changes = [password]
  }
}
