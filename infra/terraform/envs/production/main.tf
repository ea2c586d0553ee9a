# Production: one NAT gateway per AZ, larger instances, longer backups, a separate node
# group for the aggregation workers that KEDA scales on Kafka lag.
module "platform" {
  source = "../../modules/platform"

  environment        = "production"
  vpc_cidr_block     = "10.40.0.0/16"
  single_nat_gateway = false

  msk_broker_instance_type  = "kafka.m7g.large"
  msk_broker_volume_gb      = 4000 # docs/capacity.md: 10,000 facilities keep ~3.7 TB per broker (7 d, RF 3)
  rds_instance_class        = "db.r6g.xlarge"
  rds_backup_retention_days = 35
  influxdb_instance_type    = "db.influx.xlarge"
  redis_node_type           = "cache.r7g.large"

  eks_node_groups = {
    general = {
      instance_types = ["m7g.xlarge"]
      capacity_type  = "ON_DEMAND"
      min_size       = 3
      desired_size   = 6
      max_size       = 12
      disk_gb        = 80
    }
    stream = {
      instance_types = ["c7g.xlarge"]
      capacity_type  = "ON_DEMAND"
      min_size       = 3
      desired_size   = 3
      max_size       = 12
      disk_gb        = 50
    }
  }

  runbook_base_url = var.runbook_base_url
}
