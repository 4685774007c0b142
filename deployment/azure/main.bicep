// Gondola's cloud, one resource group per environment: IoT Hub (gateways -> cloud, module
// twins), an Event Hubs namespace (the stream the lake and the stream job read), ADLS Gen2 (the
// lake), a Synapse workspace (serverless SQL views over gold), Key Vault (pseudonym key,
// model-signing key, connection strings) and the model store (blob container the gateways
// download signed models from).
//
// Sized by parameters: stores-100.bicepparam and stores-1000.bicepparam carry the values of the
// sizing table in docs/deploy.md (computed by cloud/sizing.py; a test keeps them equal).
//   az deployment group create -g RG -f deployment/azure/main.bicep -p deployment/azure/stores-100.bicepparam

targetScope = 'resourceGroup'

@description('Short name prefix for every resource (lower case letters and digits).')
@minLength(3)
@maxLength(11)
param prefix string

@description('Azure region.')
param location string = resourceGroup().location

@description('Number of stores (gateways) this environment is sized for; recorded as a tag.')
@minValue(1)
param storeCount int

@description('IoT Hub tier: S1 (400k messages/day/unit), S2 (6 M), S3 (300 M).')
@allowed(['S1', 'S2', 'S3'])
param iotHubSku string = 'S1'

@description('IoT Hub units of that tier.')
@minValue(1)
@maxValue(200)
param iotHubUnits int = 1

@description('Partitions of the IoT Hub built-in events endpoint and of the stream event hub.')
@minValue(2)
@maxValue(32)
param partitions int = 4

@description('Event Hubs Standard throughput units (1 MB/s or 1,000 events/s in each).')
@minValue(1)
@maxValue(40)
param eventHubsThroughputUnits int = 1

@description('Upper bound for Event Hubs auto-inflate.')
@minValue(1)
@maxValue(40)
param eventHubsMaxThroughputUnits int = 4

@description('Days the stream event hub keeps events (a consumer down for longer loses data).')
@minValue(1)
@maxValue(7)
param streamRetentionDays int = 7

@description('Lake redundancy: ZRS keeps the lake through a zone outage.')
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_RAGZRS'])
param lakeRedundancy string = 'Standard_ZRS'

@description('Object id of the Entra ID group of data engineers (Synapse and Key Vault administrators).')
param engineersGroupObjectId string

@description('Synapse SQL administrator login (Entra ID-only authentication stays on).')
param synapseSqlAdminLogin string = 'gondolaadmin'

@secure()
@description('Password of that login; required by the resource, unused while Entra-only auth is on.')
param synapseSqlAdminPassword string

var tags = {
  application: 'gondola'
  stores: string(storeCount)
}
var suffix = uniqueString(resourceGroup().id)
var names = {
  iotHub: '${prefix}-iothub-${suffix}'
  eventHubs: '${prefix}-ehns-${suffix}'
  lake: take('${prefix}lake${suffix}', 24)
  modelStore: take('${prefix}models${suffix}', 24)
  synapse: take('${prefix}-syn-${suffix}', 50)
  keyVault: take('${prefix}-kv-${suffix}', 24)
}
// Built-in role definitions
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var keyVaultAdministrator = '00482a5a-887f-4fb3-b363-3b7fe8e74483'

// ---- the lake (ADLS Gen2) and the model store -------------------------------------------------

resource lake 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: names.lake
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: lakeRedundancy }
  properties: {
    isHnsEnabled: true
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
  }
}

resource lakeBlob 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: lake
  name: 'default'
}

resource lakeContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for c in ['lake', 'synapse', 'eventhub-checkpoints']: {
  parent: lakeBlob
  name: c
  properties: { publicAccess: 'None' }
}]

resource modelStore 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: names.modelStore
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_ZRS' }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
  }
}

resource modelBlob 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: modelStore
  name: 'default'
  properties: {
    // A published model is never overwritten in place; versions keep every upload.
    isVersioningEnabled: true
    deleteRetentionPolicy: { enabled: true, days: 30 }
  }
}

resource modelsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: modelBlob
  name: 'models'
  properties: { publicAccess: 'None' }
}

// ---- Event Hubs: the stream IoT Hub routes every gateway batch to -----------------------------

resource eventHubs 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: names.eventHubs
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
    capacity: eventHubsThroughputUnits
  }
  properties: {
    minimumTlsVersion: '1.2'
    isAutoInflateEnabled: eventHubsMaxThroughputUnits > eventHubsThroughputUnits
    maximumThroughputUnits: eventHubsMaxThroughputUnits > eventHubsThroughputUnits ? eventHubsMaxThroughputUnits : 0
  }
}

resource stream 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: eventHubs
  name: 'gondola-stream'
  properties: {
    partitionCount: partitions
    messageRetentionInDays: streamRetentionDays
  }
}

resource streamGroups 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = [for g in ['lake-bronze', 'cloud-stream']: {
  parent: stream
  name: g
}]

resource streamSend 'Microsoft.EventHub/namespaces/eventhubs/authorizationRules@2024-01-01' = {
  parent: stream
  name: 'iothub-routing'
  properties: { rights: ['Send'] }
}

// ---- IoT Hub ---------------------------------------------------------------------------------

resource iotHub 'Microsoft.Devices/IotHubs@2023-06-30' = {
  name: names.iotHub
  location: location
  tags: tags
  sku: {
    name: iotHubSku
    capacity: iotHubUnits
  }
  properties: {
    minTlsVersion: '1.2'
    eventHubEndpoints: {
      events: {
        retentionTimeInDays: 1
        partitionCount: partitions
      }
    }
    routing: {
      endpoints: {
        eventHubs: [
          {
            name: 'stream'
            connectionString: listKeys(streamSend.id, streamSend.apiVersion).primaryConnectionString
          }
        ]
      }
      routes: [
        {
          // Every gateway batch goes to the stream (7 days of retention, two consumer groups).
          name: 'batches-to-stream'
          source: 'DeviceMessages'
          condition: 'true'
          endpointNames: ['stream']
          isEnabled: true
        }
        {
          // ...and stays on the built-in endpoint for ad-hoc readers (az iot hub monitor-events).
          name: 'batches-to-builtin'
          source: 'DeviceMessages'
          condition: 'true'
          endpointNames: ['events']
          isEnabled: true
        }
      ]
      fallbackRoute: {
        name: '$fallback'
        source: 'DeviceMessages'
        condition: 'true'
        endpointNames: ['events']
        isEnabled: true
      }
    }
  }
}

// ---- Synapse (serverless SQL over gold) ------------------------------------------------------

resource synapse 'Microsoft.Synapse/workspaces@2021-06-01' = {
  name: names.synapse
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' }
  properties: {
    defaultDataLakeStorage: {
      accountUrl: lake.properties.primaryEndpoints.dfs
      filesystem: 'synapse'
      resourceId: lake.id
    }
    sqlAdministratorLogin: synapseSqlAdminLogin
    sqlAdministratorLoginPassword: synapseSqlAdminPassword
    azureADOnlyAuthentication: true
    publicNetworkAccess: 'Enabled'
  }
}

resource synapseAdmins 'Microsoft.Synapse/workspaces/administrators@2021-06-01' = {
  parent: synapse
  name: 'activeDirectory'
  properties: {
    administratorType: 'ActiveDirectory'
    login: 'gondola-engineers'
    sid: engineersGroupObjectId
    tenantId: subscription().tenantId
  }
}

resource synapseReadsLake 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(lake.id, synapse.id, storageBlobDataContributor)
  scope: lake
  properties: {
    principalId: synapse.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
  }
}

// ---- Key Vault -------------------------------------------------------------------------------

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: names.keyVault
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
  }
}

resource engineersAdministerVault 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, engineersGroupObjectId, keyVaultAdministrator)
  scope: keyVault
  properties: {
    principalId: engineersGroupObjectId
    principalType: 'Group'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultAdministrator)
  }
}

output iotHubName string = iotHub.name
output iotHubHostName string = iotHub.properties.hostName
output eventHubsNamespace string = eventHubs.name
output streamEventHub string = stream.name
output lakeAccount string = lake.name
output lakeUri string = 'abfss://lake@${lake.name}.dfs.${environment().suffixes.storage}/gondola'
output modelStoreAccount string = modelStore.name
output synapseServerlessEndpoint string = synapse.properties.connectivityEndpoints.sqlOnDemand
output keyVaultUri string = keyVault.properties.vaultUri
