output "endpoint" {
  description = "Host of the InfluxDB HTTP API (ENERGY_INFLUX__URL = https://<endpoint>:<port>)"
  value       = aws_timestreaminfluxdb_db_instance.this.endpoint
}

output "port" {
  description = "Port of the InfluxDB HTTP API"
  value       = aws_timestreaminfluxdb_db_instance.this.port
}

output "admin_secret_arn" {
  description = "Secret with the administrator credentials"
  value       = aws_secretsmanager_secret.admin.arn
}

output "instance_id" {
  description = "Id of the instance (CloudWatch dimension)"
  value       = aws_timestreaminfluxdb_db_instance.this.id
}

output "reliability" {
  description = "Resolved high-availability settings (asserted by terraform test)"
  value = {
    deployment_type     = aws_timestreaminfluxdb_db_instance.this.deployment_type
    publicly_accessible = aws_timestreaminfluxdb_db_instance.this.publicly_accessible
  }
}
