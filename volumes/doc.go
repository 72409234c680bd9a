// Package volumes will copy the contents of the target workload's volumes (configMap, secret,
// service-account token, downwardAPI, emptyDir) to a private local directory and keep them fresh.
//
// Status: not built yet; the subject of the "Environment and volumes of the target workload" issue.
package volumes
