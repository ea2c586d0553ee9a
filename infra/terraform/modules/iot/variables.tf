variable "name" {
  description = "Name prefix, e.g. energy-production"
  type        = string
}

variable "mqtt_topic_filter" {
  description = "MQTT topic filter of the meters (ENERGY_MQTT__TOPIC_PREFIX + /#)"
  type        = string
  default     = "meters/#"
}

variable "kafka_topic" {
  description = "MSK topic receiving the raw meter messages"
  type        = string
  default     = "meter-readings-raw"
}

variable "bootstrap_brokers_sasl_scram" {
  description = "MSK bootstrap servers for SCRAM clients"
  type        = string
}

variable "scram_secret_arn" {
  description = "ARN of the MSK SCRAM secret used by the rule"
  type        = string
}

variable "scram_secret_name" {
  description = "Name of the MSK SCRAM secret used by the rule (AmazonMSK_...)"
  type        = string
}

variable "vpc_id" {
  description = "VPC of the brokers"
  type        = string
}

variable "vpc_cidr_block" {
  description = "CIDR of the VPC"
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the rule's ENIs"
  type        = list(string)
}

variable "kms_key_arn" {
  description = "KMS key of the SCRAM secret and error logs"
  type        = string
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
  default     = {}
}
