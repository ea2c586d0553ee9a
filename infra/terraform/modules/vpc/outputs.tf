output "vpc_id" {
  description = "Id of the VPC"
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "CIDR of the VPC"
  value       = aws_vpc.this.cidr_block
}

output "azs" {
  description = "Availability zones used, one subnet of each tier in each"
  value       = local.azs
}

output "public_subnet_ids" {
  description = "Public subnets (load balancers, NAT gateways)"
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "Private subnets (EKS nodes, MSK brokers, IoT rule ENIs)"
  value       = aws_subnet.private[*].id
}

output "data_subnet_ids" {
  description = "Isolated subnets without internet route (RDS, InfluxDB, Redis)"
  value       = aws_subnet.data[*].id
}

output "private_subnet_cidrs" {
  description = "CIDRs of the private (application) subnets"
  value       = aws_subnet.private[*].cidr_block
}

output "reliability" {
  description = "Resolved AZ spread (asserted by terraform test)"
  value = {
    azs          = length(distinct(local.azs))
    private_azs  = length(distinct(aws_subnet.private[*].availability_zone))
    data_azs     = length(distinct(aws_subnet.data[*].availability_zone))
    nat_gateways = length(aws_nat_gateway.this)
  }
}
