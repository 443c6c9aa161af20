#include "common/dataset.h"

#include "common/cifar.h"
#include "common/image_folder.h"

namespace vit {

const char* data_format_name(DataFormat f) {
  switch (f) {
    case DataFormat::Cifar100: return "cifar-100";
    case DataFormat::ImageFolder: return "image-folder";
    default: return "cifar-10";
  }
}

DatasetInfo probe_dataset(const std::string& dir) {
  DatasetInfo d;
  if (is_image_folder(dir)) {
    d.format = DataFormat::ImageFolder;
    d.class_names = image_folder_classes(dir);
    d.classes = (int)d.class_names.size();
    return d;
  }
  d.native_size = CIFAR_IMAGE_SIZE;
  d.class_names = dataset_class_names(dir);
  if (is_cifar100(dir)) {
    d.format = DataFormat::Cifar100;
    d.classes = CIFAR100_CLASSES;
    if ((int)d.class_names.size() != d.classes) d.class_names.clear();  // not usable as is
  }
  return d;
}

}  // namespace vit
